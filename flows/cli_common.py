"""What every `curate` command shares: the consoles and the one way to fail with a message."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr (no traceback) and exit with `code` (2: bad input).

    The message is printed as written: brackets in it (key paths, lists) are not rich markup."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)
