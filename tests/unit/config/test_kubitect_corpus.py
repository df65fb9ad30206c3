"""Kubitect's own configs (presets, docs examples, CI) validate or fail as tests/corpus/kubitect says.

The manifest records, for each config, Kubitect's outcome (read from its code) and ours; where
they differ it must say why (a §10 defect of the original, or an issue's decision).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubitect_core.cli import app
from kubitect_core.config import ConfigError, load_config_text, parse_yaml

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "kubitect"
MANIFEST = parse_yaml((CORPUS / "manifest.yaml").read_text(), "manifest.yaml")
CONFIGS = MANIFEST["configs"]
TEMPLATES = MANIFEST["templates"]
OVERLAYS = MANIFEST["overlays"]
SNIPPETS = parse_yaml((CORPUS / MANIFEST["snippets"]).read_text(), MANIFEST["snippets"])


def _outcome(text: str, source: str) -> dict:
    """{"valid": True, "warnings": [...], "notices": [...]} or {"errors": {path: message}}."""
    try:
        loaded = load_config_text(text, source)
    except ConfigError as exc:
        return {"errors": {i.path: i.message for i in exc.issues}}
    return {"valid": True, "warnings": sorted({w.path for w in loaded.warnings}), "notices": loaded.notices}


def _merge(base, fragment):
    """The fragment over the base: mappings merged key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(fragment, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in fragment.items()}}
    return fragment


def test_every_corpus_file_is_in_the_manifest():
    listed = {c["file"] for c in CONFIGS} | {t["file"] for t in TEMPLATES} | {o["fragment"] for o in OVERLAYS}
    listed.add(MANIFEST["snippets"])
    present = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "manifest.yaml"
               and p.suffix != ".md"}
    assert listed == present


@pytest.mark.parametrize("entry", CONFIGS, ids=[c["file"] for c in CONFIGS])
def test_kubitect_config(entry):
    _check(entry, _outcome((CORPUS / entry["file"]).read_text(), entry["file"]))


@pytest.mark.parametrize("entry", OVERLAYS, ids=[o["fragment"] for o in OVERLAYS])
def test_kubitect_docs_step(entry):
    import yaml

    base = parse_yaml((CORPUS / entry["base"]).read_text(), entry["base"])
    fragment = parse_yaml((CORPUS / entry["fragment"]).read_text(), entry["fragment"])
    merged = yaml.safe_dump(_merge(base, fragment), sort_keys=False)
    _check(entry, _outcome(merged, entry["fragment"]))


@pytest.mark.parametrize("entry", SNIPPETS["snippets"],
                         ids=[s["origin"].rsplit("/", 1)[1] for s in SNIPPETS["snippets"]])
def test_kubitect_user_guide_snippet(entry):
    import yaml

    base = parse_yaml((CORPUS / SNIPPETS["base"]).read_text(), SNIPPETS["base"])
    merged = yaml.safe_dump(_merge(base, entry["config"]), sort_keys=False)
    _check(entry, _outcome(merged, entry["origin"]))


def _check(entry: dict, got: dict) -> None:
    want = entry["ours"]
    for notice in want.get("notices", []):
        assert any(notice in n for n in got.get("notices", [])), got
    if want.get("valid"):
        assert "errors" not in got, got
        assert got["warnings"] == sorted(want.get("warnings", []))
    else:
        assert "errors" in got, f"expected errors, got {got}"
        assert set(got["errors"]) == set(want["errors"]), got["errors"]
        for path, fragment in want["errors"].items():
            assert fragment in got["errors"][path], (path, got["errors"][path])
    kubitect_valid = entry["kubitect"] == "valid"
    ours_valid = bool(want.get("valid"))
    same_errors = not kubitect_valid and not ours_valid and set(entry["kubitect"]["errors"]) == set(want["errors"])
    if kubitect_valid != ours_valid or (not ours_valid and not same_errors) or want.get("warnings"):
        assert entry.get("differs"), "the outcomes differ: the manifest must say why"


def _expand(template: dict):
    names = list(template["matrix"])
    for values in itertools.product(*(template["matrix"][n] for n in names)):
        yield dict(zip(names, values, strict=True))


CI_RUNS = [(t, v) for t in TEMPLATES for v in _expand(t)]


@pytest.mark.parametrize("template,values", CI_RUNS,
                         ids=[f"{t['file']}:{'-'.join(v.values())}" for t, v in CI_RUNS])
def test_kubitect_ci_config(template, values):
    text = (CORPUS / template["file"]).read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text
    got = _outcome(text, template["file"])
    assert template["kubitect"] == "valid" and template["ours"]["valid"]
    assert "errors" not in got, got


def test_the_empty_label_of_kubitects_docs_is_an_empty_text():
    text = (CORPUS / "docs" / "full-example.yaml").read_text()
    raw = parse_yaml(text, "full-example.yaml")
    assert raw["cluster"]["nodes"]["worker"]["default"]["labels"]["node-role.kubernetes.io/node"] is None
    # fixed so the rest validates, the label arrives on every worker as ""
    fixed = text.replace('"This is a custom default node label"', "custom").replace(
        '"Overwrite default node label"', "overwritten").replace('"Node label, only for this instance"', "own")
    fixed = fixed.replace("        - id: 2\n          ip: 10.10.64.102", "        - id: 2\n          ip: 10.10.64.102\n"
                          "          host: remote-server-2")
    loaded = load_config_text(fixed, "full-example.yaml")
    assert all(w.labels["node-role.kubernetes.io/node"] == "" for w in loaded.topology.workers)
    assert loaded.topology.workers[2].labels["custom-label"] == "overwritten"


def test_validate_cli_on_the_corpus(tmp_path):
    """The CLI gives the manifest's verdict too (exit 0 for valid, 1 with the paths for invalid)."""
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    for entry in CONFIGS:
        result = runner.invoke(app, ["validate", str(CORPUS / entry["file"])])
        assert result.exit_code == (0 if entry["ours"].get("valid") else 1), (entry["file"], result.output)
        for path in entry["ours"].get("errors", {}):
            assert path in result.output
