"""The measured tables of README.md, MODEL_ZOO.md and projects/QuantMimic/docs/ are what their records give
(`make docs`, quant_mimic_tools.docs)."""

import json
import shutil

import pytest

from quant_mimic_tools import docs


def test_every_committed_page_matches_its_records():
    assert docs.stale_pages() == [], "run `make docs`: a page differs from its records"


def test_every_marker_names_a_known_table_and_every_table_is_on_a_page():
    used = set()
    for page in docs.PAGES:
        path = docs.ROOT / page
        if path.is_file():
            used |= {m.group(2) for m in docs.MARKER.finditer(path.read_text())}
    assert used <= set(docs.TABLES)
    assert set(docs.TABLES) <= used


def test_an_edited_record_makes_its_pages_stale(tmp_path):
    records = tmp_path / "records"
    shutil.copytree(docs.RECORDS, records)
    path = records / "main_job.json"
    record = json.loads(path.read_text())
    qm = next(r for r in record["runs"] if r["model"] == "student_qm_seed0")
    qm["AP"] += 1.0
    path.write_text(json.dumps(record))
    stale = docs.stale_pages(records=docs.Records(records))
    assert "README.md" in stale and "MODEL_ZOO.md" in stale
    with pytest.raises(SystemExit) as e:
        docs.main(["--check", "--records", str(records)])
    assert e.value.code == 1


def test_make_docs_rewrites_a_stale_page_from_its_record(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("before\n<!-- table:study_finding -->\nstale\n<!-- /table -->\nafter\n")
    docs.main(["--root", str(tmp_path)])
    text = page.read_text()
    assert "stale" not in text and "+0.10 AP, 95% CI [-0.96, 1.17]" in text
    assert text.startswith("before\n") and text.endswith("<!-- /table -->\nafter\n")


def test_an_absent_record_is_not_yet_measured(tmp_path):
    text = "<!-- table:study_single -->\n<!-- /table -->\n<!-- table:model_zoo_voc -->\n<!-- /table -->\n"
    out = docs.render(text, docs.Records(tmp_path))
    assert out.count(docs.NOT_MEASURED) >= 2
    assert "72.9" in out  # the paper's VOC teacher beside the configs


def test_a_study_record_in_the_study_commands_format_renders(tmp_path):
    """A study.json as quant_mimic_tools.study writes it (no source entry) fills the single-level table."""
    record = {
        "schedule": {"max_iter": 800, "eval_period": 200, "lr_step": 640},
        "arms": {
            "qm": {"description": "QM", "runs": {"0": {"AP": 26.5, "flat": True}}, "mean": 26.5, "std": None}
        },
        "pairs": {},
        "ablations": {},
    }
    (tmp_path / "study_single.json").write_text(json.dumps(record))
    out = docs.render("<!-- table:study_single -->\n<!-- /table -->\n", docs.Records(tmp_path))
    assert "| qm | QM | 1 | 0: 26.5 | 26.5 | - | 1/1 |" in out
    assert "Source not recorded" in out


def test_an_unknown_table_is_refused():
    with pytest.raises(KeyError, match="unknown table"):
        docs.render("<!-- table:nope -->\n<!-- /table -->\n", docs.Records())
