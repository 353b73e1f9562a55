"""The README's headline table is the shipped bundle's, as `kws report` measured it.

Compares files only (the benchmarks behind docs/shipped_model.json are `kws report`'s job, not
the suite's): the JSON must carry the SHA-256 of app/default_bundle/manifest.json, so a
re-shipped model cannot keep its predecessor's figures, and the README must show exactly the
table that JSON renders to.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bnnkws.app.commands import report as cmd_report

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
SHIPPED = REPO / "app" / "default_bundle"


def test_readme_table_is_the_shipped_bundles_regenerated_table():
    problems = cmd_report.check_docs(README, DOCS / cmd_report.JSON_NAME, SHIPPED)
    assert problems == [], "\n".join(problems)
    result = json.loads((DOCS / cmd_report.JSON_NAME).read_text())
    # every row the table shows is a measured figure or says why it is not
    assert result["rows"] and all(r["value"] for r in result["rows"])
    assert (DOCS / cmd_report.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_catches_a_reshipped_bundle_and_a_hand_edited_table(tmp_path):
    # a consistent set written the way `kws report` writes it, from the stored figures
    result = json.loads((DOCS / cmd_report.JSON_NAME).read_text())
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    result["bundle"]["manifest_sha256"] = cmd_report.manifest_sha256(bundle)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / cmd_report.JSON_NAME).write_text(json.dumps(result))
    (docs / cmd_report.MD_NAME).write_text(cmd_report.full_markdown(result))
    shutil.copy(DOCS / cmd_report.PNG_NAME, docs / cmd_report.PNG_NAME)
    readme = tmp_path / "README.md"
    readme.write_text(cmd_report.splice_readme(README.read_text(),
                                               cmd_report.table_markdown(result), readme))
    assert cmd_report.check_docs(readme, docs / cmd_report.JSON_NAME, bundle) == []

    # one figure typed over in the README
    table = cmd_report.readme_table(readme.read_text())
    row = next(line for line in table.splitlines() if " ms |" in line)
    good = readme.read_text()
    readme.write_text(good.replace(row, row.replace(" ms |", "0 ms |"), 1))
    problems = cmd_report.check_docs(readme, docs / cmd_report.JSON_NAME, bundle)
    assert len(problems) == 1 and str(readme) in problems[0], problems
    readme.write_text(good)

    # a figure typed over in the JSON and the README alike: the rows no longer follow from the
    # stored figures of the steps
    forged = json.loads(json.dumps(result))
    forged["rows"][0]["value"] = "99.9 / 99.9 / 99.9 / 99.9 / 99.9 %"
    (docs / cmd_report.JSON_NAME).write_text(json.dumps(forged))
    (docs / cmd_report.MD_NAME).write_text(cmd_report.full_markdown(forged))
    readme.write_text(cmd_report.splice_readme(good, cmd_report.table_markdown(forged), readme))
    problems = cmd_report.check_docs(readme, docs / cmd_report.JSON_NAME, bundle)
    assert len(problems) == 1 and "do not follow from its figures" in problems[0], problems
    (docs / cmd_report.JSON_NAME).write_text(json.dumps(result))
    (docs / cmd_report.MD_NAME).write_text(cmd_report.full_markdown(result))
    readme.write_text(good)

    # the bundle re-shipped (any change to its manifest, as a re-export makes)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["delta"] = manifest["delta"] + 0.05
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    problems = cmd_report.check_docs(readme, docs / cmd_report.JSON_NAME, bundle)
    assert len(problems) == 1 and "another bundle" in problems[0], problems


def test_splice_replaces_only_the_marked_part_and_names_a_readme_without_markers(tmp_path):
    text = f"intro\n{cmd_report.README_BEGIN}\nold\n{cmd_report.README_END}\noutro\n"
    out = cmd_report.splice_readme(text, "| a | b |\n", "R.md")
    assert out == f"intro\n{cmd_report.README_BEGIN}\n| a | b |\n{cmd_report.README_END}\noutro\n"
    assert cmd_report.readme_table(out) == "| a | b |\n"
    with pytest.raises(cmd_report.CLIError, match="R.md"):
        cmd_report.splice_readme("no markers here", "x", "R.md")


def test_readme_and_architecture_stay_short():
    # the budget: a user's guide and a map, with the experiment tables in docs/
    readme = README.read_text()
    assert len(readme.splitlines()) <= 220 and len(readme.encode()) <= 14_000
    assert len((REPO / "ARCHITECTURE.md").read_text().splitlines()) <= 160
    # it starts with the two set-up commands
    assert readme.split("```bash\n", 1)[1].startswith("./bootstrap demo")


def test_stream_row_names_the_snr_of_the_bed_when_bench_stream_measured_it():
    """`kws bench-stream` records its clean row's bed level; the README row says it (figures
    from before it keep the plain label)."""
    result = json.loads((DOCS / cmd_report.JSON_NAME).read_text())
    figures = json.loads(json.dumps(result["figures"]))
    figures["stream"].get("settings", {}).pop("bed_snr_db", None)
    plain = cmd_report.headline_rows(figures, result["bundle"]["delta"],
                                     result.get("bench_stream_has_noise", False))
    figures["stream"].setdefault("settings", {})["bed_snr_db"] = -0.5
    named = cmd_report.headline_rows(figures, result["bundle"]["delta"],
                                     result.get("bench_stream_has_noise", False))
    changed = [(a, b) for a, b in zip(plain, named) if a != b]
    assert len(changed) == 1
    assert "noise bed (itself -0.5 dB SNR):" in str(changed[0][1])
    assert "itself" not in str(changed[0][0])


def test_rows_name_a_per_exit_delta_and_compare_it_with_the_sweep():
    """A bundle whose δ is one per exit (`kws eval --per-exit --store-delta`) gets the same
    table, the setting written out where a number was."""
    result = json.loads((DOCS / cmd_report.JSON_NAME).read_text())
    figures = json.loads(json.dumps(result["figures"]))
    per_exit = [0.05, 0.2, 0.6, 0.65, 0.0]
    sweep = figures["bench"]["sweep"]
    sweep["bundle_delta"] = {**sweep["bundle_delta"], "delta": per_exit}
    rows = cmd_report.headline_rows(figures, per_exit, result.get("bench_stream_has_noise", False))
    text = " ".join(r["figure"] + " " + r["value"] for r in rows)
    assert "δ = 0.05/0.2/0.6/0.65/0" in text and "δ = 0.25" not in text
    assert any(r["figure"].startswith("cheapest δ within 1 point") for r in rows)  # not "same"


def test_a_multi_corpus_bundle_is_scored_on_every_corpus_it_trained_on():
    """The shipped model trained on the subset and the extra clips and was chosen on both
    corpora's validation clips: the table scores the other corpus' held-out speakers too, and
    its row follows from the stored figures."""
    manifest = json.loads((REPO / "app" / "default_bundle" / "manifest.json").read_text())
    data = "../shared/data/speech_commands_v2_test"
    more = cmd_report.other_corpora(manifest, data)
    assert more == ["sc:../shared/data/speech_commands_extra"]
    assert cmd_report.other_corpora(manifest, "/elsewhere/shared/data/speech_commands_extra") \
        == [data]  # the same folder seen from another clone counts as trained on
    single = {"source": {"split": {"data": data}}}
    assert cmd_report.other_corpora(single, data) == [] and cmd_report.other_corpora({}, data) == []
    result = json.loads((DOCS / cmd_report.JSON_NAME).read_text())
    f = result["figures"]
    t, v = f["eval_corpus1_testing"], f["eval_corpus1_validation"]
    assert t["corpus"] == v["corpus"] == more[0] and t["num_clips"] > 100 and v["num_clips"] > 1000
    row = [r for r in result["rows"] if r["source"] == "eval_corpus1_testing"]
    assert len(row) == 1 and "`speech_commands_extra`" in row[0]["figure"]
    assert row[0]["value"].startswith(f"{100 * t['last_exit_accuracy']:.1f} % / ")


def test_report_refuses_up_front_when_a_corpus_the_bundle_trained_on_is_missing(tmp_path,
                                                                               capsys):
    """Before minutes of benchmarks, not after: the other corpus' splits are part of the
    table, so a machine without it gets an error that names it."""
    from bnnkws.app import cli

    bundle = tmp_path / "b"
    shutil.copytree(SHIPPED, bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    man["source"]["split"]["data"] = [man["source"]["split"]["data"][0], "sc:/nowhere/extra"]
    (bundle / "manifest.json").write_text(json.dumps(man))
    rc = cli.main(["report", str(bundle), "--readme", "", "--docs", str(tmp_path / "docs"),
                   "--work", str(tmp_path / "work")])
    assert rc == 2 and "sc:/nowhere/extra" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
