from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.metrics.protocol import TRACK_A, TRACK_B, CaseEvaluator
from custom.metrics.report import CaseMetricsReport

GEOMETRY = BiplanarGeometry().resampled((12, 12, 12), (12, 12))


def _run(report: CaseMetricsReport, cases: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    engine = SimpleNamespace(state=SimpleNamespace())
    report._start(engine)
    for name, (pred, label) in cases.items():
        engine.state.batch = [{"case": name, "image": CaseEvaluator(GEOMETRY).drr(label[0])}]
        engine.state.output = [{"pred": pred, "label": label}]
        report._collect(engine)
    report._write(engine)


def test_rows_are_each_cases_metrics_and_the_summary_their_statistics(tmp_path):
    torch.manual_seed(0)
    label = torch.rand(1, 12, 12, 12) * 2000 - 1024
    cases = {"a": (label + 50, label), "b": (label - 200, label), "c": (label * 0.5, label)}
    _run(CaseMetricsReport(tmp_path, GEOMETRY), cases)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [row["case"] for row in rows] == ["a", "b", "c"]
    assert list(rows[0]) == ["case", *TRACK_A, *TRACK_B]
    evaluate = CaseEvaluator(GEOMETRY)
    for row, (pred, target) in zip(rows, cases.values()):
        expected = evaluate(pred, target, evaluate.drr(target[0]))
        assert {name: float(row[name]) for name in TRACK_A} == pytest.approx(expected["track_a"])
        assert {name: float(row[name]) for name in TRACK_B} == pytest.approx(expected["track_b"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cases"] == 3 and set(summary["track_a"]) == set(TRACK_A) and set(summary["track_b"]) == set(TRACK_B)
    mae = [float(row["mae_hu"]) for row in rows]
    assert summary["track_b"]["mae_hu"]["mean"] == pytest.approx(sum(mae) / 3)
    assert summary["track_b"]["mae_hu"]["median"] == pytest.approx(sorted(mae)[1])
    assert summary["track_b"]["mae_hu"]["max"] == pytest.approx(max(mae))


def test_a_perfect_case_keeps_json_valid(tmp_path):
    label = torch.zeros(1, 12, 12, 12)
    _run(CaseMetricsReport(tmp_path, GEOMETRY), {"same": (label, label)})
    text = (tmp_path / "summary.json").read_text()
    assert json.loads(text)["track_b"]["psnr_3d"] == {
        "mean": "inf",
        "std": "nan",
        "median": "inf",
        "min": "inf",
        "max": "inf",
    }
    assert "Infinity" not in text and "NaN" not in text


def test_an_existing_report_is_refused_before_the_run(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match="summary.json"):
        CaseMetricsReport(tmp_path, GEOMETRY)._start(SimpleNamespace())
    assert (tmp_path / "summary.json").read_text() == "{}"
