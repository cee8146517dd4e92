"""Write the hostile-input corpus (data/, configs/, templates/) that tests/test_hostile.py runs.

    .venv/bin/python tests/hostile/make_corpus.py      # rewrites the files; they are committed

Bytes that editors and git would mangle (NUL, invalid UTF-8, BOM, bare CR) are written
from here, so the corpus stays exact. What each file must produce is in expect.yaml;
files without an entry there still get the generic checks (no crash, a clear error or
exact row accounting).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def jl(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


def ok(text: str, label: str = "a") -> dict:
    return {"text": text, "label": label}


def _parquet(columns: dict) -> bytes:
    import polars as pl

    buf = io.BytesIO()
    pl.DataFrame(columns).write_parquet(buf, statistics=False)
    return buf.getvalue()


DATA: dict[str, bytes] = {
    "truncated_json.jsonl": jl(ok("a fine first message"), b'{"text": "cut in the mid', b'{"text": "also cut", "lab', ok("a fine last message", "b")),
    "wrong_types.jsonl": jl(ok("a fine message here"), {"text": 42, "label": "a"}, {"text": ["a", "list"], "label": "b"},
                            {"text": {"nested": "object"}, "label": "c"}, {"text": "label is a number", "label": 7},
                            {"text": True, "label": "a"}),
    "missing_fields.jsonl": jl(ok("a fine message here"), {"label": "a"}, {"text": "no label at all"}, {}),
    "extra_fields.jsonl": jl({"text": "extra fields are ignored", "label": "a", "id": 1, "meta": {"x": [1, 2]}},
                             {"text": "another with extras", "label": "b", "score": 0.5}),
    "empty_and_whitespace.jsonl": jl(ok(""), ok("   "), ok("\t\n  \r\n"), ok("\u200b\u200b"), ok("a fine message here"),
                                     {"text": "empty label here", "label": ""}, {"text": "blank label here", "label": "   "}),
    "nul_bytes.jsonl": jl(b'{"text": "raw nul \x00 byte inside", "label": "a"}', ok("escaped nul \u0000 in text"),
                          ok("a fine message here")),
    "invalid_utf8.jsonl": jl(b'{"text": "bad \xff\xfe bytes", "label": "a"}', b'{"text": "cut \xe2\x82 sequence", "label": "b"}',
                             ok("a fine message here")),
    "bom.jsonl": b"\xef\xbb\xbf" + jl(ok("first line after a byte-order mark"), ok("second line", "b")),
    "bom.csv": b"\xef\xbb\xbftext,label\nfirst row after a BOM,a\nsecond row,b\n",
    "csv_quoted_newlines.csv": b'text,label\n"a message\nover two lines",a\n"quotes ""inside"" it",b\n"comma, inside",c\n',
    "csv_unbalanced_quotes.csv": b'text,label\nfine row one,a\n"never closed quote,b\nfine row two,c\nfine row three,a\n',
    "mixed_line_endings.csv": b"text,label\r\ncrlf ended row,a\r\nlf ended row,b\nbare cr ended row,c\rlast row here,a\n",
    "mixed_line_endings.jsonl": jl(ok("lf ended line")) + json.dumps(ok("crlf ended line", "b")).encode() + b"\r\n"
    + json.dumps(ok("bare cr ended line", "c")).encode() + b"\r" + json.dumps(ok("after the bare cr")).encode() + b"\n",
    "unknown_labels.jsonl": jl(ok("a fine message here"), ok("label not in the set", "zzz"), ok("label in wrong case", "A"),
                               ok("label with spaces", " a ")),
    "duplicate_ids.jsonl": jl({"id": 1, "text": "same id first", "label": "a"}, {"id": 1, "text": "same id second", "label": "b"},
                              {"id": 1, "text": "same id first", "label": "a"}, {"id": 1, "text": "same id first", "label": "b"}),
    "not_an_object.jsonl": jl([1, 2, 3], "just a string", 12, None, ok("a fine message here")),
    "empty_file.jsonl": b"",
    "only_blank_lines.jsonl": b"\n\n   \n\t\n",
    "deeply_nested.jsonl": jl(b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b', "label": "a"}', ok("a fine message here")),
    "binary_garbage.jsonl": bytes(range(256)) * 4 + b"\n" + jl(ok("a fine message here")),
    "nan_and_huge_numbers.jsonl": jl(b'{"text": NaN, "label": "a"}', b'{"text": "big number", "label": "a", "n": 1e999}',
                                     ok("a fine message here")),
    "duplicate_keys.jsonl": jl(b'{"text": "first value", "text": "second value wins", "label": "a"}'),
    "no_trailing_newline.jsonl": jl(ok("first line here")) + json.dumps(ok("last line without newline", "b")).encode(),
    "unicode_tricks.jsonl": jl(ok("right\u202eto\u202cleft override"), ok("zero\u200bwidth\u200cjoiners"),
                               ok("emoji \U0001f600 and combining e\u0301"), ok("fullwidth \uff21\uff22\uff23 letters", "b")),
    "csv_missing_label_column.csv": b"text,category\nrow with the wrong column,a\n",
    "csv_duplicate_label_column.csv": b"text,label,label\nwhich label is meant,a,b\n",
    "compressed.jsonl.gz": gzip.compress(jl(ok("a gzip-compressed first line"), ok("and its second line", "b")), mtime=0),
    "zstd_compressed.jsonl": b"\x28\xb5\x2f\xfd" + bytes(range(32)),
    "utf16_spreadsheet_export.csv": "\ufefftext,label\r\nexported as unicode text,a\r\nsecond exported row,b\r\n".encode("utf-16-le"),
    "not_parquet.parquet": b"PAR1 this file only starts like Parquet",
    "wrong_types.parquet": _parquet({"text": [1, 2], "label": ["a", "b"]}),
    "ansi_escapes.jsonl": jl(ok("red \x1b[31m text \x1b[0m here"), ok("a fine message here")),
    "line_separators.jsonl": jl(ok("line\u2028separator"), ok("para\u2029graph"), ok("next\u0085line"), ok("form\x0cfeed")),
    "lone_surrogate.jsonl": jl(b'{"text": "a lone \\ud800 surrogate", "label": "a"}', ok("a fine message here")),
}

CONFIGS: dict[str, str | bytes] = {
    "unknown_keys.yaml": "name: t\ntask: {kind: classification, input_field: text, output_field: label, colour: red}\n"
                         "data: {train: [{path: x.jsonl}]}\ncleen: {min_chars: 3}\n",
    "wrong_types.yaml": "name: t\ntask: {kind: classification, input_field: text, output_field: label}\n"
                        "data: {train: [{path: x.jsonl}]}\nclean: {min_chars: lots, max_chars: [1]}\nseed: zero\n",
    "impossible_values.yaml": "name: t\ntask: {kind: classification, input_field: text, output_field: label}\n"
                              "data: {train: [{path: x.jsonl}]}\nclean: {min_chars: 500, max_chars: 10}\n"
                              "dedupe: {near: {threshold: 1.5}}\ningest: {max_field_bytes: -1}\n",
    "python_tag.yaml": "name: !!python/object/apply:os.system ['echo pwned']\n",
    "not_a_mapping.yaml": "- just\n- a list\n",
    "empty.yaml": "",
    "bad_indentation.yaml": "name: t\ntask:\n  kind: classification\n input_field: text\n",
    "bad_regex.yaml": "name: t\ntask: {kind: generation, input_field: text, output_field: mr, class_pattern: '([a-z'}\n"
                      "data: {train: [{path: x.jsonl}]}\n",
    "duplicate_labels.yaml": "name: t\ntask: {kind: classification, input_field: text, output_field: label, labels: [a, b, a]}\n"
                             "data: {train: [{path: x.jsonl}]}\n",
    "bad_name.yaml": "name: ../../etc\ntask: {kind: classification, input_field: text, output_field: label}\n"
                     "data: {train: [{path: x.jsonl}]}\n",
    "no_train_sources.yaml": "name: t\ntask: {kind: classification, input_field: text, output_field: label}\ndata: {train: []}\n",
    "bad_train_section.yaml": "name: t\ntask: {kind: classification, input_field: text, output_field: label}\n"
                              "data: {train: [{path: x.jsonl}]}\ntrain: {lora_r: 0, optimizer: sgd}\n",
    "duplicate_keys.yaml": "name: t\ntask: {kind: classification, input_field: text, output_field: label}\n"
                           "data: {train: [{path: x.jsonl}]}\nseed: 1\nclean: {min_chars: 3}\nseed: 2\n",
    "not_utf8.yaml": b"name: t\ndescription: caf\xe9 in latin-1\n",
}

HEADER = """{#---
name: NAME
version: 1
job: generate
task: banking77
classes: all
few_shot: 2
sampling: {temperature: 0.9, max_tokens: 32}
parse: {kind: json, field: text, schema: {type: object, properties: {text: {type: string}}, required: [text]}}
variables: [label, examples]
---#}
"""

TEMPLATES: dict[str, str] = {
    "undefined_variable.jinja": "Write a message for {{ label }} like {{ no_such_thing }}.\n",
    "syntax_error.jinja": "Write a message for {{ label }}.\n{% for x in examples %}\n{{ x.text }\n",
    "python_internals.jinja": "{{ label.__class__.__mro__[1].__subclasses__() }}\n",
    "globals_escape.jinja": "{{ cycler.__init__.__globals__.os.popen('id').read() }}\n",
    "format_string_escape.jinja": "{{ '{0.__class__}'.format(label) }}\n",
    "include_outside.jinja": "{% include '/etc/passwd' %}\n",
    "missing_header.jinja": None,
    "memory_bomb.jinja": "{{ 'a' * 10000000000 }}\n",
    "join_bomb.jinja": "{{ range(100000)|map('string')|join('x' * 100000) }}\n",
    "format_width_bomb.jinja": "{{ '{:>10000000000}'.format(label) }}\n",
    "doubling_macro.jinja": "{% macro grow(s, n) %}{{ grow(s ~ s, n - 1) if n else s }}{% endmacro %}{{ grow(label, 40) }}\n",
    "output_flood.jinja": "{% for i in range(100000) %}{% for j in range(100000) %}{{ label }}{% endfor %}{% endfor %}\n",
}


def main() -> None:
    for sub in ("data", "configs", "templates"):
        (HERE / sub).mkdir(exist_ok=True)
    for name, data in DATA.items():
        (HERE / "data" / name).write_bytes(data)
    for name, text in CONFIGS.items():
        (HERE / "configs" / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    for name, body in TEMPLATES.items():
        text = "Write one message for {{ label }}.\n" if body is None else HEADER.replace("NAME", name.split(".")[0]) + body
        (HERE / "templates" / name).write_text(text)
    print(f"{len(DATA)} data files, {len(CONFIGS)} configs, {len(TEMPLATES)} templates in {HERE}")


if __name__ == "__main__":
    main()
