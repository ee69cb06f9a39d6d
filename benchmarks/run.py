"""Every benchmark in one command, written into docs/benchmarks.md.

    make bench                              # = .venv/bin/python benchmarks/run.py
    python benchmarks/run.py --only encode serve
    python benchmarks/run.py --quick --docs /tmp/bench   # smoke run, leaves docs/ alone

Each module here (encode, encode_contended, train, search, serve) has `run(quick) -> dict` and
`plot(result, path)`. For each, this writes `DOCS/benchmarks/NAME.json` (the raw rows) and
`NAME.png`, and replaces the section between `<!-- bench:NAME:begin -->` and
`<!-- bench:NAME:end -->` in `DOCS/benchmarks.md` with the table, the command, the date
and the machine. Sections written by hand outside the markers are kept.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

from cpt_embed.atomic import atomic_file

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("encode", "encode_contended", "train", "search", "serve")


def machine() -> str:
    """CPU model and core count, for the record."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def write_atomic(path: Path, data: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(data)


def section(result: dict, seconds: float, image: str) -> str:
    """The Markdown written between one benchmark's markers."""
    import torch

    name = result["name"]
    today = datetime.date.today().isoformat()
    return (
        f"<!-- bench:{name}:begin -->\n"
        f"## {result['title']}\n\n"
        f"Command: `{result['command']}` ({today}; {machine()}; torch {torch.__version__}; "
        f"{seconds / 60:.1f} min). Written by `make bench`.\n\n"
        f"{result['markdown'].strip()}\n\n"
        f"![{result['title']}]({image})\n"
        f"<!-- bench:{name}:end -->"
    )


def replace_section(document: str, name: str, text: str) -> str:
    pattern = re.compile(
        re.escape(f"<!-- bench:{name}:begin -->") + ".*?" + re.escape(f"<!-- bench:{name}:end -->"),
        re.S,
    )
    if pattern.search(document):
        return pattern.sub(lambda _: text, document)
    return document.rstrip("\n") + "\n\n" + text + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--docs", type=Path, default=HERE.parent / "docs")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    out = args.docs / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    markdown = args.docs / "benchmarks.md"
    started = time.perf_counter()
    for name in args.only:
        print(f"== {name}", flush=True)
        module = importlib.import_module(name)
        begun = time.perf_counter()
        result = module.run(quick=args.quick)
        seconds = time.perf_counter() - begun
        write_atomic(out / f"{name}.json", json.dumps(result, indent=2) + "\n")
        module.plot(result, out / f"{name}.png")
        document = markdown.read_text(encoding="utf-8") if markdown.is_file() else "# Benchmarks\n"
        text = section(result, seconds, f"benchmarks/{name}.png")
        write_atomic(markdown, replace_section(document, name, text))
        print(result["markdown"], f"\n({seconds / 60:.1f} min)\n", flush=True)
    print(f"all benchmarks: {(time.perf_counter() - started) / 60:.1f} min -> {markdown}")


if __name__ == "__main__":
    main()
