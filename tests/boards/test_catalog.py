"""The board catalog: every file parses, every figure has a source, docs/hardware.md's [check] marks kept."""

import os
import subprocess
import sys

import pytest
import yaml

from potatura.boards.catalog import (
    CATALOG_DIR,
    REQUIRED,
    _figures,
    get_board,
    load_catalog,
    parse_board,
)
from potatura.errors import ConfigError

BOARDS = ["pynq-z1", "pynq-z2", "ultra96-v2", "zcu104", "kv260", "zcu102",
          "alveo-u50", "alveo-u200", "alveo-u250", "alveo-u280"]


def test_catalog_has_the_ten_boards_one_file_each():
    catalog = load_catalog()
    assert sorted(catalog) == sorted(BOARDS)
    assert sorted(p.stem for p in CATALOG_DIR.glob("*.yaml")) == sorted(BOARDS)


@pytest.mark.parametrize("name", BOARDS)
def test_every_figure_has_a_source(name):
    doc = yaml.safe_load((CATALOG_DIR / f"{name}.yaml").read_text())
    figures = _figures({k: v for k, v in doc.items() if k not in ("name", "description", "family")})
    assert set(REQUIRED) <= set(figures)
    for dotted, fig in figures.items():
        assert isinstance(fig["source"], str) and len(fig["source"]) > 5, dotted
    board = get_board(name)
    assert board.sources == {k: f["source"] for k, f in figures.items()}
    assert board.bram18 == 2 * doc["resources"]["bram36"]["value"]


def test_figures_match_hardware_md_table():
    # docs/hardware.md section 1, row by row: part, LUT, FF, DSP, BRAM36, URAM, clock.
    table = {
        "pynq-z1": ("xc7z020clg400-1", 53200, 106400, 220, 140, 0, 100),
        "pynq-z2": ("xc7z020clg400-1", 53200, 106400, 220, 140, 0, 100),
        "ultra96-v2": ("xczu3eg-sbva484-1-i", 70560, 141120, 360, 216, 0, 100),
        "zcu104": ("xczu7ev-ffvc1156-2-e", 230400, 460800, 1728, 312, 96, 100),
        "kv260": ("xck26-sfvc784-2LV-c", 117120, 234240, 1248, 144, 64, 100),
        "zcu102": ("xczu9eg-ffvb1156-2-e", 274080, 548160, 2520, 912, 0, 100),
        "alveo-u50": ("xcu50-fsvh2104-2-e", 872000, 1743000, 5952, 1344, 640, 300),
        "alveo-u200": ("xcu200-fsgd2104-2-e", 1182000, 2364000, 6840, 2160, 960, 300),
        "alveo-u250": ("xcu250-figd2104-2L-e", 1728000, 3456000, 12288, 2688, 1280, 300),
        "alveo-u280": ("xcu280-fsvh2892-2L-e", 1304000, 2607000, 9024, 2016, 960, 300),
    }
    for name, (part, lut, ff, dsp, bram36, uram, clock) in table.items():
        b = get_board(name)
        assert (b.part, b.lut, b.ff, b.dsp, b.bram36, b.uram, b.clock_mhz) == (part, lut, ff, dsp, bram36, uram, clock)


def test_check_marks_of_hardware_md_are_verify_flags():
    marked = {  # every figure docs/hardware.md tags [check]
        "pynq-z2": ["memory.size_mb"], "ultra96-v2": ["memory.size_mb"], "zcu104": ["memory.size_mb"],
        "kv260": ["resources.lut", "resources.ff"], "zcu102": ["memory.size_mb"],
        "alveo-u50": ["resources.lut"], "alveo-u200": ["resources.lut"], "alveo-u250": ["resources.lut"],
        "alveo-u280": ["resources.lut"],
    }
    for name, figures in marked.items():
        assert set(figures) <= set(get_board(name).verify), name
    # figures docs/hardware.md gives without a mark stay unflagged
    assert "resources.dsp" not in get_board("kv260").verify
    assert "memory.bandwidth_gbs" not in get_board("kv260").verify
    assert "resources.lut" not in get_board("pynq-z2").verify


def test_shells_pynq_versions_and_alveo_platforms():
    for b in load_catalog().values():
        if b.family == "alveo":
            assert b.shell == "alveo-xrt" and b.platform and b.pynq_images == ()
        else:
            assert b.shell == "zynq-ps-axi-dma" and b.ps_ip.startswith("xilinx.com:ip:")
    z2 = get_board("pynq-z2")
    assert "4.0" not in z2.pynq_images and z2.python == "3.10"  # PYNQ 4.0 dropped Zynq-7000
    assert z2.memory_mb == 512 and z2.memory_type == "DDR3" and z2.bandwidth_gbs > 0


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        get_board("pynq-z9")
    assert "pynq-z9" in str(err.value)
    for name in BOARDS:
        assert name in str(err.value)


def test_malformed_catalog_files_are_clear_errors(tmp_path):
    doc = yaml.safe_load((CATALOG_DIR / "pynq-z2.yaml").read_text())
    del doc["resources"]["dsp"]["source"]
    (tmp_path / "pynq-z2.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="resources.dsp: every figure needs a non-empty source"):
        parse_board(tmp_path / "pynq-z2.yaml")
    doc = yaml.safe_load((CATALOG_DIR / "pynq-z2.yaml").read_text())
    doc["resources"]["bram18"]["value"] = 281
    (tmp_path / "pynq-z2.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="bram18 = 281 is not 2 x resources.bram36"):
        parse_board(tmp_path / "pynq-z2.yaml")
    (tmp_path / "zcu104.yaml").write_text((CATALOG_DIR / "pynq-z2.yaml").read_text())
    with pytest.raises(ConfigError, match="expected the file's stem 'zcu104'"):
        parse_board(tmp_path / "zcu104.yaml")


def _cli(*args):
    # rich wraps long lines at the terminal width (80 when piped): give it room so the YAML stays YAML.
    env = dict(os.environ, COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "potatura", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_cli_boards_list_and_show():
    listed = _cli("boards", "list")
    assert listed.returncode == 0, listed.stderr
    assert "53,200" in listed.stdout and "12,288" in listed.stdout
    shown = _cli("boards", "show", "kv260")
    assert shown.returncode == 0, shown.stderr
    doc = yaml.safe_load(shown.stdout)
    assert doc["resources"]["lut"] == {"value": 117120, "source": doc["resources"]["lut"]["source"], "verify": True}
    unknown = _cli("boards", "show", "nope")
    assert unknown.returncode == 2
    assert "unknown board 'nope'; known boards: pynq-z1, pynq-z2" in unknown.stderr


def _board_doc(name="pynq-z2"):
    return yaml.safe_load((CATALOG_DIR / f"{name}.yaml").read_text())


def test_backends_map_and_the_earlier_form(tmp_path):
    assert get_board("zcu104").backend_option("hls4ml", "board") == "zcu102"
    old = _board_doc()
    old["shell"]["hls4ml_board"] = old.pop("backends")["hls4ml"]["board"]
    (tmp_path / "pynq-z2.yaml").write_text(yaml.safe_dump(old))
    board = parse_board(tmp_path / "pynq-z2.yaml")
    assert board.backends == {"hls4ml": {"board": "pynq-z2"}} and board.resources() == get_board("pynq-z2").resources()
    both = _board_doc()
    both["shell"]["hls4ml_board"] = {"value": "pynq-z2", "source": "hls4ml 1.3.0"}
    (tmp_path / "pynq-z2.yaml").write_text(yaml.safe_dump(both))
    with pytest.raises(ConfigError, match="shell.hls4ml_board and backends.hls4ml are both set"):
        parse_board(tmp_path / "pynq-z2.yaml")
    for change, message in ((lambda d: d.pop("backends"), "no backends map"),
                            (lambda d: d["backends"].update(nonesuch={"x": {"value": 1, "source": "a source"}}),
                             "backends.nonesuch: unknown backend; known backends: hls4ml")):
        doc = _board_doc()
        change(doc)
        (tmp_path / "pynq-z2.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=message):
            parse_board(tmp_path / "pynq-z2.yaml")
    with pytest.raises(ConfigError, match=r"pynq-z2.yaml: backends.nonesuch.board is missing"):
        get_board("pynq-z2").backend_option("nonesuch", "board")
