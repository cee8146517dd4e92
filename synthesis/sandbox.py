"""The Jinja sandbox with bounds: a template cannot exhaust memory or time.

jinja2's ImmutableSandboxedEnvironment keeps templates away from Python internals, but
not from resources: `{{ 'a' * 10**10 }}` asks for 10 GB, `{{ 10 ** 10 ** 10 }}` never
finishes, nested loops over `range(100000)` run for hours. A template written by a
colleague (or copied from somewhere) is not trusted to that degree, so every render here
is bounded, and breaking a bound is a SecurityError (a `sandbox` problem with the
template's file and line, as for reaching internals):

Sizes are footprints (`_footprint`): what a value would be as text, counted without
making it, a string its characters, a list or mapping what it holds at every reference
(`[s] * 10**6` is a million references to one string, cheap to build and 10**6 times
`s` as text). Counting stops past the bound, so it costs at most the bound in steps.

- `*` may not build a string, or a list holding, more than MAX_RENDER_SIZE items
  (`['a' * 10**6] * 10**6` and `[[1] * 10**6] * 10**6` are 10**12);
- `**` may not build a number of more than MAX_POWER_BITS bits;
- a call or filter may not take an integer argument beyond MAX_RENDER_SIZE (widths in
  `center`, `ljust`, `indent`, `'%*s'`, `'{:>N}'.format` and the like), nor an argument
  already holding that much (a macro doubling its argument), and neither may a width or
  precision written in a `%` or `str.format` format string;
- no value holding more than MAX_RENDER_CHARS goes into a filter or out through
  `{{ ... }}` (where str() would make it text: `|string`, `|tojson`, `|pprint` too);
- the calls, filters and operators whose result can dwarf their inputs are refused,
  before they run, when their result would pass MAX_RENDER_CHARS: `join`, `replace`,
  `translate`, `expandtabs` (str and bytes), `indent`, `wordwrap`, `urlize` and `tojson`
  with their arguments, `sum` of lists (quadratic copying), `%` and `str.format` (every
  field at least its width or the widest argument: `('{0:>999999}' * 1000).format(x)`),
  `~` and `+`; any other result that long is refused after;
- the output may not pass MAX_RENDER_CHARS characters, nor may what a macro, a block, a
  `set` or a `filter` body collects (environment.concat: a loop inside a macro repeats
  its argument without any output leaving the render);
- a render may not run longer than MAX_RENDER_SECONDS: checked at every call, attribute,
  item, operator and output chunk, and by a watchdog thread as well (a loop with an
  empty body touches none of those). One call into C (str() of a huge list, a sort)
  cannot be interrupted: that is why sizes are checked before such calls, not timed.

A prompt is a few thousand characters; these bounds are far above any real one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import re
import string
import threading
import time
from typing import Any, Iterable

from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDER_CHARS = 1_000_000
MAX_RENDER_SIZE = 1_000_000
MAX_POWER_BITS = 4096
MAX_RENDER_SECONDS = 10.0

# Widths and precisions in printf-style (`%10.3f`, `%*s`) and str.format (`{:>10}`, `{0:{w}}`) specs.
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\d+|\*)?(?:\.(\d+|\*))?[a-zA-Z%]")
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_DIGITS = re.compile(r"\d+")

_state = threading.local()

_TEXT = (str, bytes, bytearray)
_CONTAINERS = (list, tuple, set, frozenset, type({}.keys()), type({}.values()), type({}.items()))


def _check_time() -> None:
    end = getattr(_state, "deadline", None)
    if end is not None and time.monotonic() > end:
        raise RenderTimeout()


def _footprint(value: Any, limit: int = MAX_RENDER_CHARS, indent: int = 0) -> int:
    """About how many characters `str(value)` makes, counted without making it.

    A string counts its length, an integer its digits, a list, tuple, set or mapping the
    items it holds, each at least 1 and counted again at every reference (`[a, a]` holds
    `a` twice: a value of references to references is cheap to build and huge as text).
    Counting stops once past `limit`, so measuring costs at most `limit` steps whatever
    the value would expand to. `indent`: also count `indent` spaces per level of depth
    for every item (json.dumps with an indent puts each on a line of its own).
    """
    if isinstance(value, _TEXT):
        return len(value)
    total, stack = 0, [(value, 0)]
    while stack and total <= limit:
        v, depth = stack.pop()
        total += indent * depth
        if isinstance(v, _TEXT):
            total += len(v) or 1
        elif isinstance(v, int):
            total += v.bit_length() * 3 // 10 + 1  # decimal digits, about
        elif isinstance(v, dict) and v:
            stack.extend((k, 0) for k in v)  # a key shares its value's line
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, _CONTAINERS) and v:
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, range):
            total += len(v) or 1
        else:
            total += 1  # a float, None, an empty container, any other object: a few characters
    return total


def _check_value(value: Any, where: str) -> None:
    """A value that would pass the output bound as text goes no further (before anything converts it)."""
    if _footprint(value) > MAX_RENDER_CHARS:
        raise SecurityError(f"a value {where} holds more than {MAX_RENDER_CHARS:,} items (a string counts its characters),"
                            " beyond the sandbox's bound")


def _check_size(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RENDER_SIZE:
        raise SecurityError(f"{what} {value} is beyond the sandbox's bound of {MAX_RENDER_SIZE:,}")


def _check_args(args: tuple, kwargs: dict) -> None:
    """No integer argument beyond the bound (widths, counts), no argument already holding that much."""
    _check_time()
    for value in (*args, *kwargs.values()):
        _check_size(value, "an argument of")
        if not isinstance(value, int) and _footprint(value, MAX_RENDER_SIZE) > MAX_RENDER_SIZE:
            raise SecurityError(f"an argument holding more than {MAX_RENDER_SIZE:,} items (a string counts its characters)"
                                " is beyond the sandbox's bound")


def _check_result(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple)) and len(value) > MAX_RENDER_CHARS:
        raise SecurityError(f"a value of {len(value):,} items is beyond the sandbox's bound of {MAX_RENDER_CHARS:,}")
    return value


def _check_estimate(size: int, what: str, unit: str = "characters") -> None:
    if size > MAX_RENDER_CHARS:
        raise SecurityError(f"{what} would make about {size:,} {unit}, beyond the sandbox's bound of {MAX_RENDER_CHARS:,}")


def _longest(values) -> int:
    return max((len(v) for v in values if isinstance(v, str)), default=1)


def _sized(items: Any) -> Any:
    """An iterable as a list (a generator, a map) of at most MAX_RENDER_SIZE items; sized values as they are."""
    if hasattr(items, "__len__"):
        return items
    got = list(itertools.islice(items, MAX_RENDER_SIZE + 1))
    if len(got) > MAX_RENDER_SIZE:
        raise SecurityError(f"an iterable of more than {MAX_RENDER_SIZE:,} items is beyond the sandbox's bound")
    return got


def _check_join(sep: str, items: Any, what: str) -> Any:
    items = _sized(items)
    _check_estimate(len(sep) * len(items) + _footprint(items), what)
    return items


def _check_str_method(s: str | bytes, name: str, args: tuple, kwargs: dict) -> tuple:
    """The str and bytes methods whose result can be far longer than their inputs, checked before they run; the args to call with."""
    what = f"{type(s).__name__}.{name}"
    if name == "join" and args:
        return (_check_join(s, args[0], what), *args[1:])
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], type(s)) and isinstance(args[1], type(s)):
        count = s.count(args[0]) if args[0] else len(s) + 1
        _check_estimate(len(s) + count * len(args[1]), what)
    elif name == "translate" and args and isinstance(args[0], dict):
        _check_estimate(len(s) * _longest(args[0].values()), what)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _check_estimate(len(s) + s.count("\t" if isinstance(s, str) else b"\t") * max(size, 0), what)
    return args


def _check_format(fmt: str, printf: bool) -> None:
    if printf:
        numbers = [n for spec in _PRINTF_SPEC.findall(fmt) for n in spec if n.isdigit()]
    else:
        numbers = [n for spec in _FORMAT_SPEC.findall(fmt) for n in _DIGITS.findall(spec)]
    for n in numbers:
        _check_size(int(n), "a width or precision of")


def _widest(values: list) -> tuple[int, int]:
    """The largest footprint among format arguments, and the largest integer (a `*` or `{w}` width)."""
    return (max((_footprint(v) for v in values), default=0),
            max((v for v in values if isinstance(v, int) and not isinstance(v, bool)), default=0))


def _check_printf(fmt: str, right: Any, what: str) -> None:
    """`fmt % right`: every conversion makes at least its width or precision, or the widest argument."""
    values = list(right.values()) if isinstance(right, dict) else list(right) if isinstance(right, tuple) else [right]
    for value in values:
        _check_size(value, "a '%' argument")
    widest, number = _widest(values)
    size = len(fmt)
    for m in _PRINTF_SPEC.finditer(fmt):
        if not m.group(0).endswith("%"):
            size += max(widest, *(number if n == "*" else int(n or 0) for n in m.groups()))
    _check_estimate(size, what)


def _check_str_format(fmt: str, values: list) -> None:
    """`fmt.format(...)`: every replacement field makes at least its width or precision, or the widest argument."""
    try:
        fields = [spec for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError:
        return  # a malformed format string: the call itself says so
    widest, number = _widest(values)
    size = len(fmt)
    for spec in fields:
        width = max((int(n) for n in _DIGITS.findall(spec or "")), default=0)
        size += max(widest, width, number if spec and "{" in spec else 0)
    _check_estimate(size, "str.format")


def _check_filter(name: str, value: Any, rest: tuple, kwargs: dict) -> Any:
    """The filters whose result can dwarf their input, estimated before they run; the value to filter."""
    def arg(i: int, key: str, default: Any = None) -> Any:
        return rest[i] if len(rest) > i else kwargs.get(key, default)

    if isinstance(value, str):
        if name == "format":
            _check_format(value, printf=True)
            _check_printf(value, kwargs or rest, "format")
        elif name == "replace" and len(rest) >= 2:
            _check_str_method(value, "replace", tuple(str(x) for x in rest[:2]), {})
        elif name == "indent":
            prefix = arg(0, "width", 4)
            width = len(prefix) if isinstance(prefix, str) else prefix if isinstance(prefix, int) else 0
            _check_estimate(len(value) + (value.count("\n") + 1) * width, "indent")
        elif name == "wordwrap":
            width, wrap = arg(0, "width", 79), arg(2, "wrapstring") or "\n"
            if isinstance(width, int) and isinstance(wrap, str):
                _check_estimate(len(value) + (len(value) // max(width, 1) + 1) * len(wrap), "wordwrap")
        elif name == "urlize":  # every link repeats its text and carries target and rel
            extra = sum(len(x) for x in (arg(2, "target"), arg(3, "rel")) if isinstance(x, str))
            links = value.count(".") + value.count(":") + 1
            _check_estimate(2 * len(value) + links * (extra + 64), "urlize")
    if name == "join" and value is not None:
        sep = arg(0, "d", "")
        if isinstance(sep, str):
            value = _check_join(sep, value, "join")
    elif name == "tojson":
        indent = arg(0, "indent")
        if isinstance(indent, int) and indent > 0:
            _check_estimate(_footprint(value, MAX_RENDER_CHARS, indent), "tojson")
    elif name == "sum" and isinstance(arg(1, "start", 0), (list, tuple)):
        value = _sized(value)  # adding lists copies what came before at every step
        _check_estimate(len(value) * (_footprint(value) + len(arg(1, "start"))), "sum", "copied items")
    return value


def _bounded_filter(name: str, fn):
    """The filter registered as `name`, within the bounds: its arguments, the value it is given, what it would make."""
    skip = 2 if getattr(fn, "jinja_pass_arg", None) is not None else 1  # (context,) value, args...

    @functools.wraps(fn)  # keeps jinja_pass_arg
    def bounded(*args, **kwargs):
        _check_args(args[skip:], kwargs)
        if len(args) >= skip:
            value, rest = args[skip - 1], args[skip:]
            _check_value(value, f"given to the filter {name!r}")  # a value already past the bound goes no further
            args = (*args[:skip - 1], _check_filter(name, value, rest, kwargs), *rest)
        return _check_result(fn(*args, **kwargs))

    return bounded


class _BoundedFilters(dict):
    """The environment's filters, each bounded, those added later too (templates.make_env adds `json`)."""

    def __setitem__(self, name: str, fn) -> None:
        super().__setitem__(name, _bounded_filter(name, fn))


def _output_value(value: Any) -> Any:
    """The environment's finalize: every `{{ ... }}` value, before it is turned into text."""
    _check_value(value, "to output")
    return value


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to environment.bounded_concat (jinja2 would call its str_join directly)."""

    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment plus the bounds above (intercepted operators are never constant-folded)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *args: Any, **kwargs: Any):
        if "finalize" in kwargs:
            raise TypeError("BoundedSandbox sets its own finalize (the bound on every output value)")
        super().__init__(*args, finalize=_output_value, **kwargs)
        filters, self.filters = self.filters, _BoundedFilters()
        for name, fn in filters.items():
            self.filters[name] = fn

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if not isinstance(n, int) or n <= 0:
                    continue
                if isinstance(seq, (str, bytes)) and len(seq) * n > MAX_RENDER_SIZE:
                    raise SecurityError(f"'*' would make {len(seq) * n:,} items, beyond the sandbox's bound of {MAX_RENDER_SIZE:,}")
                # A list repeats what it holds: [s] * n with a long s, or [[1] * m] * n, is n times that much as text.
                if isinstance(seq, (list, tuple)) and seq and (size := _footprint(seq, MAX_RENDER_SIZE // n + 1) * n) > MAX_RENDER_SIZE:
                    raise SecurityError(f"'*' would make at least {size:,} items (a string counts its characters),"
                                        f" beyond the sandbox's bound of {MAX_RENDER_SIZE:,}")
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                _check_estimate(_footprint(left) + _footprint(right), "'+'")
        elif operator == "**":
            if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1 and right * math.log2(abs(left)) > MAX_POWER_BITS:
                raise SecurityError(f"'**' would make a number of more than {MAX_POWER_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, printf=True)
            _check_printf(left, right, "'%'")
        return super().call_binop(context, operator, left, right)

    def bounded_concat(self, values: tuple) -> str:
        """`a ~ b ~ ...`: refused when the result would pass the output bound (doubling a string in `set`s)."""
        _check_time()
        _check_estimate(sum(_footprint(v) for v in values), "'~'")  # before str() makes the text
        parts = [str(v) for v in values]
        _check_estimate(sum(map(len, parts)), "'~'")
        return "".join(parts)

    def concat(self, parts: Iterable[str]) -> str:
        """environment.concat: how a macro, a block, a `set` or a `filter` body joins its output (and a
        loop inside one repeats it), bounded as it collects, before the join makes the text."""
        out, size = [], 0
        for part in parts:
            size += len(part)
            if size > MAX_RENDER_CHARS:
                raise SecurityError(f"the output of a macro, block, set or filter body passed {MAX_RENDER_CHARS:,} characters,"
                                    " beyond the sandbox's bound")
            out.append(part)
        return "".join(out)

    def call(self, context, obj, /, *args: Any, **kwargs: Any) -> Any:
        _check_args(args, kwargs)
        name, owner = getattr(obj, "__name__", ""), getattr(obj, "__self__", None)
        if name in ("format", "format_map"):  # jinja2's wrapper of str.format keeps the method as __wrapped__
            fmt = owner if isinstance(owner, str) else getattr(getattr(obj, "__wrapped__", None), "__self__", None)
            if isinstance(fmt, str):
                mapping = args[0] if name == "format_map" and args and isinstance(args[0], dict) else {}
                _check_str_format(fmt, [*args, *kwargs.values(), *mapping.values()])
        elif isinstance(owner, _TEXT):
            args = _check_str_method(owner, name, args, kwargs)
        return _check_result(super().call(context, obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        if isinstance(obj, str) and attribute in ("format", "format_map"):  # jinja2 hands back a wrapper, not the bound method
            _check_format(obj, printf=False)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)


class RenderTimeout(SecurityError):
    """Raised in a render that passed MAX_RENDER_SECONDS (by the watchdog, when no check fired first)."""

    def __init__(self, *args: Any):
        super().__init__(*args or (f"the template rendered for more than {MAX_RENDER_SECONDS:g} s",))


class _Watchdog:
    """One daemon thread that ends renders past their deadline, in whatever thread they run.

    A loop with an empty body touches no hook of the sandbox; the watchdog raises
    RenderTimeout in the rendering thread (PyThreadState_SetAsyncExc: the exception
    lands between two bytecodes). It only does so while the render is registered, under
    the lock its unregistering takes, so it cannot land after the render has finished.
    """

    TICK = 0.05

    def __init__(self):
        self.lock = threading.Lock()
        self.deadlines: dict[int, float] = {}
        self.thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        with self.lock:
            self.deadlines[threading.get_ident()] = time.monotonic() + seconds
            if self.thread is None or not self.thread.is_alive():  # first use, or a forked child
                self.thread = threading.Thread(target=self._run, name="render-watchdog", daemon=True)
                self.thread.start()

    def disarm(self) -> None:
        with self.lock:
            self.deadlines.pop(threading.get_ident(), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            with self.lock:
                now = time.monotonic()
                for ident in [i for i, end in self.deadlines.items() if now > end + self.TICK]:
                    del self.deadlines[ident]
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(RenderTimeout))


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def _deadline(seconds: float):
    """The render deadline: checked by the hooks, enforced by the watchdog (nested renders share the outer one)."""
    if getattr(_state, "deadline", None) is not None:
        yield
        return
    _state.deadline = time.monotonic() + seconds
    _WATCHDOG.arm(seconds)
    try:
        yield
    finally:
        _WATCHDOG.disarm()
        _state.deadline = None


def bounded_render(template, context: dict[str, Any]) -> str:
    """Render a compiled template of a BoundedSandbox within the time and output bounds."""
    with _deadline(MAX_RENDER_SECONDS):
        parts, size = [], 0
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_RENDER_CHARS:
                raise SecurityError(f"the template's output passed {MAX_RENDER_CHARS:,} characters")
            _check_time()
            parts.append(chunk)
        return "".join(parts)
