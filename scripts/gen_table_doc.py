#!/usr/bin/env python3
"""make docs: write docs/table-format.md, build/table-format.json and build/cxlnic_tables.h."""

import argparse
from pathlib import Path

from cxlnic.tabledoc import c_header, json_export, markdown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    out = {
        args.root / "docs" / "table-format.md": markdown(),
        args.root / "build" / "table-format.json": json_export(),
        args.root / "build" / "cxlnic_tables.h": c_header(),
    }
    for path, text in out.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(args.root)}")


if __name__ == "__main__":
    main()
