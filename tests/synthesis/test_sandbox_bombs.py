"""Template bombs that build far more than their own size: each is refused by a bound before it allocates.

Every bomb renders in a child process whose address space is capped (RLIMIT_AS): a bomb
that gets past the bounds dies there of MemoryError (reported as a crash) instead of
taking this machine's memory, and the test sees which bound refused each one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEADER = """{#---
name: bomb
version: 1
job: generate
task: t
few_shot: 0
parse: {kind: json, field: text, schema: {type: object, properties: {text: {type: string}}}}
variables: [label]
---#}
"""

# A value of 10^10 characters' worth of text built from references alone (no '*'): ten
# references to a 10^6-character string, ten to that list, and so on; cheap to make, and
# 10 GB to turn into text.
NESTED = (
    "{% set a = label * 1000000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
    "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
    "{% set e = [d, d, d, d, d, d, d, d, d, d] %}"
)

BOMBS = {
    # '*' with a sequence: bounded by what it holds, not by its length
    "list_of_long_strings": ("{{ [label * 1000000] * 1000000 }}", "'*' would make"),
    "list_of_lists": ("{{ [[1] * 1000000] * 1000000 }}", "'*' would make"),
    "list_of_lists_tojson": ("{{ ([[1] * 1000000] * 1000000)|tojson }}", "'*' would make"),
    # conversions to text, bounded before they run
    "output": (NESTED + "{{ e }}", "output"),
    "tojson": (NESTED + "{{ e|tojson }}", "beyond the sandbox's bound"),
    "json": (NESTED + "{{ e|json }}", "beyond the sandbox's bound"),
    "string": (NESTED + "{{ e|string }}", "beyond the sandbox's bound"),
    "join": (NESTED + "{{ e|join }}", "beyond the sandbox's bound"),
    "concat": (NESTED + "{{ label ~ e }}", "'~' would make"),
    "plus": (NESTED + "{{ [e] + [e] }}", "'+' would make"),
    "printf": (NESTED + "{{ '%s' % (e,) }}", "beyond the sandbox's bound"),
    "format_filter": (NESTED + "{{ '%s'|format(e) }}", "beyond the sandbox's bound"),
    "str_format": (NESTED + "{{ '{}'.format(e) }}", "beyond the sandbox's bound"),
    "pprint": (NESTED + "{{ e|pprint }}", "beyond the sandbox's bound"),
    # the same width or value written many times in one format string
    "format_repeated_width": ("{{ ('{0:>999999}' * 1000).format(label) }}", "format would make"),
    "printf_repeated_width": ("{{ ('%999999s' * 1000) % ((label,) * 1000) }}", "'%' would make"),
    "format_repeated_field": ("{% set a = label * 1000000 %}{{ ('{0}' * 1000).format(a) }}", "format would make"),
    # str and bytes methods whose result dwarfs their inputs
    "expandtabs": ("{{ ('\\t' * 1000000).expandtabs(1000000) }}", "expandtabs would make"),
    "bytes_replace": ("{{ (label * 1000000).encode().replace(label.encode(), (label * 1000000).encode()) }}",
                      "replace would make"),
    # filters with an argument that multiplies the output
    "indent_width": ("{{ ('\\n' * 1000000)|indent(1000000, blank=True) }}", "indent would make"),
    "tojson_indent": ("{{ ([1] * 1000)|tojson(1000000) }}", "tojson would make"),
    "urlize_target": ("{{ ('http://x.com ' * 70000)|urlize(target=label * 1000000) }}", "urlize would make"),
    "sum_of_lists": ("{{ ([[1]] * 1000000)|sum(start=[]) }}", "sum would make"),  # quadratic copying, in C
    # output collected into a buffer (macro, set block, filter block) and joined there
    "macro_buffer": ("{% macro m(s) %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endmacro %}"
                     "{{ m(label * 1000000)|length }}", "beyond the sandbox's bound"),
    "set_block": ("{% set a = label * 1000000 %}{% set x %}{% for i in range(100000) %}{{ a }}{% endfor %}{% endset %}"
                  "{{ x|length }}", "beyond the sandbox's bound"),
    "filter_block": ("{% set a = label * 1000000 %}{% filter length %}{% for i in range(100000) %}{{ a }}{% endfor %}"
                     "{% endfilter %}", "beyond the sandbox's bound"),
}

CHILD = textwrap.dedent("""
    import json, resource, sys, tempfile
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
    resource.setrlimit(resource.RLIMIT_CPU, (300, resource.getrlimit(resource.RLIMIT_CPU)[1]))  # one C call cannot be interrupted
    from synthesis.templates import TemplateProblemError, load_template
    header, bombs = json.loads(sys.stdin.read())
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, body in bombs.items():
            path = Path(d) / "bomb.jinja"
            path.write_text(header + body)
            try:
                load_template(path).render(label="a")
                out[name] = ["rendered", ""]
            except TemplateProblemError as exc:
                p = exc.problems[0]
                out[name] = [p.code, p.message]
            except BaseException as exc:
                out[name] = ["crash", type(exc).__name__]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def outcomes() -> dict[str, list[str]]:
    res = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps([HEADER, {k: v[0] for k, v in BOMBS.items()}]),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_by_a_bound_before_it_allocates(outcomes, name):
    code, message = outcomes[name]
    assert code == "sandbox", (code, message)  # not a MemoryError under the 1.5 GiB cap, not a render
    assert BOMBS[name][1] in message, message


def test_lists_json_formats_and_macros_of_ordinary_size_still_render(tmp_path):
    from synthesis.templates import load_template

    body = ("{% macro shot(s) %}{% for i in range(2) %}<{{ s }}>{% endfor %}{% endmacro %}"
            "{{ ([label] * 3)|join('/') }}|{{ [[1] * 2] * 2 }}|{{ {'k': [label, 2]}|tojson }}|{{ [label]|tojson(2)|length }}"
            "|{{ ('{0}{0:>4}'.format(label)) }}|{{ '%s%3s' % (label, 1) }}|{{ 'a\\tb'.expandtabs(4) }}|{{ shot(label) }}"
            "|{{ ([[1], [2]])|sum(start=[]) }}|{{ 'see http://x.com'|urlize(target='_blank') }}")
    path = tmp_path / "bomb.jinja"
    path.write_text(HEADER + body)
    assert load_template(path).render(label="ab") == (
        "ab/ab/ab|[[1, 1], [1, 1]]|{\"k\": [\"ab\", 2]}|10|ab  ab|ab  1|a   b|<ab><ab>|[1, 2]"
        '|see <a href="http://x.com" rel="noopener" target="_blank">http://x.com</a>'
    )
