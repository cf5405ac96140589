"""The committed table-format document is what the layouts generate (it cannot drift)."""

import json
import subprocess
from pathlib import Path

from amaranth.lib import data

from cxlnic.hdl import layouts as L
from cxlnic.tabledoc import c_header, json_export, markdown

ROOT = Path(__file__).resolve().parent.parent


def test_committed_table_format_is_current():
    committed = (ROOT / "docs" / "table-format.md").read_text()
    assert committed == markdown(), "docs/table-format.md is stale: run `make docs` and commit it"


def test_doc_offsets_are_the_struct_offsets():
    # Spot-check against Amaranth's own field table, not against our flattener.
    text = markdown()
    fields = dict(data.Layout.cast(L.FlowEntry))
    key_off = fields["key"].offset
    src_ip_off = key_off + dict(data.Layout.cast(L.FlowKey))["src_ip"].offset
    assert f"| `key.src_ip` | {src_ip_off} | 128 |" in text
    assert "| `magic` | 0 | 32 | 0–3 |" in text


def test_json_and_c_header_exports():
    doc = json.loads(json_export())
    hdr = {f["field"]: f for f in doc["layouts"]["Header"]}
    assert hdr["version"]["offset"] == dict(data.Layout.cast(L.Header))["version"].offset
    assert doc["enums"]["ExceptionCode"]["TRUNCATED"] == int(L.ExceptionCode.TRUNCATED)
    h = c_header()
    assert "#define CXLNIC_BUCKET_SLOTS7_SIG_OFF" in h


def test_c_header_compiles(tmp_path):
    (tmp_path / "t.c").write_text('#include "cxlnic_tables.h"\nint main(void){return CXLNIC_LINE_BYTES-64;}\n')
    (tmp_path / "cxlnic_tables.h").write_text(c_header())
    r = subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "t"), str(tmp_path / "t.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert subprocess.run([str(tmp_path / "t")]).returncode == 0
