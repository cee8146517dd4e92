"""The Jinja sandbox with bounds: a template cannot exhaust memory or time.

jinja2's ImmutableSandboxedEnvironment keeps templates away from Python internals, but
not from resources: `{{ 'a' * 10**10 }}` asks for 10 GB, `{{ 10 ** 10 ** 10 }}` never
finishes, nested loops over `range(100000)` run for hours. A template written by a
colleague (or copied from somewhere) is not trusted to that degree, so every render here
is bounded, and breaking a bound is a SecurityError (a `sandbox` problem with the
template's file and line, as for reaching internals):

- `*` may not build a string or list longer than MAX_RENDER_SIZE items;
- `**` may not build a number of more than MAX_POWER_BITS bits;
- a call or filter may not take an integer argument beyond MAX_RENDER_SIZE (widths in
  `center`, `ljust`, `indent`, `'%*s'`, `'{:>N}'.format` and the like), nor a string or
  list already that long (a macro doubling its argument), and neither may a width or
  precision written in a `%` or `str.format` format string;
- the calls, filters and operators whose result can dwarf their inputs (`join`,
  `replace`, `translate`, `indent` and `wordwrap` with a string, `~` and `+`) are
  refused, before they run, when their result would pass MAX_RENDER_CHARS; any other
  result that long is refused after;
- the output may not pass MAX_RENDER_CHARS characters;
- a render may not run longer than MAX_RENDER_SECONDS: checked at every call, attribute,
  item, operator and output chunk, and by a watchdog thread as well (a loop with an
  empty body touches none of those).

A prompt is a few thousand characters; these bounds are far above any real one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import re
import threading
import time
from typing import Any

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


def _check_time() -> None:
    end = getattr(_state, "deadline", None)
    if end is not None and time.monotonic() > end:
        raise RenderTimeout()


def _check_size(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RENDER_SIZE:
        raise SecurityError(f"{what} {value} is beyond the sandbox's bound of {MAX_RENDER_SIZE:,}")


def _check_args(args: tuple, kwargs: dict) -> None:
    """No integer argument beyond the bound (widths, counts), no argument already that long."""
    _check_time()
    for value in (*args, *kwargs.values()):
        _check_size(value, "an argument of")
        if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_RENDER_SIZE:
            raise SecurityError(f"an argument of {len(value):,} items is beyond the sandbox's bound of {MAX_RENDER_SIZE:,}")


def _check_result(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple)) and len(value) > MAX_RENDER_CHARS:
        raise SecurityError(f"a value of {len(value):,} items is beyond the sandbox's bound of {MAX_RENDER_CHARS:,}")
    return value


def _check_estimate(size: int, what: str) -> None:
    if size > MAX_RENDER_CHARS:
        raise SecurityError(f"{what} would make about {size:,} characters, beyond the sandbox's bound of {MAX_RENDER_CHARS:,}")


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
    _check_estimate(len(sep) * len(items) + sum(len(x) for x in items if isinstance(x, str)), what)
    return items


def _check_str_method(s: str, name: str, args: tuple, kwargs: dict) -> tuple:
    """The str methods whose result can be far longer than their inputs, checked before they run; the args to call with."""
    if name == "join" and args:
        return (_check_join(s, args[0], "str.join"), *args[1:])
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = s.count(args[0]) if args[0] else len(s) + 1
        _check_estimate(len(s) + count * len(args[1]), "str.replace")
    elif name == "translate" and args and isinstance(args[0], dict):
        _check_estimate(len(s) * _longest(args[0].values()), "str.translate")
    return args


def _check_format(fmt: str, printf: bool) -> None:
    if printf:
        numbers = [n for spec in _PRINTF_SPEC.findall(fmt) for n in spec if n.isdigit()]
    else:
        numbers = [n for spec in _FORMAT_SPEC.findall(fmt) for n in _DIGITS.findall(spec)]
    for n in numbers:
        _check_size(int(n), "a width or precision of")


def _bounded_filter(name: str, fn):
    """The filter registered as `name`, refusing integer arguments beyond the bound (the filtered value itself is data)."""
    skip = 2 if getattr(fn, "jinja_pass_arg", None) is not None else 1  # (context,) value, args...

    @functools.wraps(fn)  # keeps jinja_pass_arg
    def bounded(*args, **kwargs):
        _check_args(args[skip:], kwargs)
        value, rest = (args[skip - 1], args[skip:]) if len(args) >= skip else (None, ())
        _check_result(value)  # a value already past the bound goes no further
        if isinstance(value, str):
            if name == "format":
                _check_format(value, printf=True)
            elif name == "replace" and len(rest) >= 2:
                _check_str_method(value, "replace", tuple(str(x) for x in rest[:2]), {})
            elif name == "indent":
                prefix = rest[0] if rest else kwargs.get("width", 4)
                if isinstance(prefix, str):
                    _check_estimate(len(value) + (value.count("\n") + 1) * len(prefix), "indent")
            elif name == "wordwrap":
                width = rest[0] if rest else kwargs.get("width", 79)
                wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
                if isinstance(width, int) and isinstance(wrap, str):
                    _check_estimate(len(value) + (len(value) // max(width, 1) + 1) * len(wrap), "wordwrap")
        if name == "join" and value is not None:
            sep = rest[0] if rest else kwargs.get("d", "")
            if isinstance(sep, str):
                args = (*args[:skip - 1], _check_join(sep, value, "join"), *rest)
        return _check_result(fn(*args, **kwargs))

    return bounded


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
        super().__init__(*args, **kwargs)
        self.filters = {name: _bounded_filter(name, fn) for name, fn in self.filters.items()}

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_RENDER_SIZE:
                    raise SecurityError(f"'*' would make {len(seq) * n:,} items, beyond the sandbox's bound of {MAX_RENDER_SIZE:,}")
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                _check_estimate(len(left) + len(right), "'+'")
        elif operator == "**":
            if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1 and right * math.log2(abs(left)) > MAX_POWER_BITS:
                raise SecurityError(f"'**' would make a number of more than {MAX_POWER_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, printf=True)
            for value in right if isinstance(right, tuple) else (right,):
                _check_size(value, "a '%' argument")
        return super().call_binop(context, operator, left, right)

    def bounded_concat(self, values: tuple) -> str:
        """`a ~ b ~ ...`: refused when the result would pass the output bound (doubling a string in `set`s)."""
        _check_time()
        parts = [str(v) for v in values]
        _check_estimate(sum(map(len, parts)), "'~'")
        return "".join(parts)

    def call(self, context, obj, /, *args: Any, **kwargs: Any) -> Any:
        _check_args(args, kwargs)
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_method(owner, getattr(obj, "__name__", ""), args, kwargs)
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
