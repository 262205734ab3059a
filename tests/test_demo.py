import pandas as pd
import pytest

from fatlib.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reports(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, size="tiny", epochs=1, progress=False, mel={"n_mels": 32, "crop_frames": 32},
                      model_kwargs={"width_mult": 0.125})
    sub = pd.read_csv(out / "submission.csv")
    sample = pd.read_csv(out / "data" / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and list(sub.fname) == list(sample.fname)
    assert sub.iloc[:, 1:].to_numpy().min() >= 0 and sub.iloc[:, 1:].to_numpy().max() <= 1
    report = (out / "report.md").read_text()
    for stage in ("stage1", "stage2", "stage3", "stage4", "ensemble"):
        assert stage in report
    assert f"{result['evaluation']['lwlrap']:.4f}" in report
    assert (out / "weights" / "demo" / "stage4" / "curve.png").stat().st_size > 1000
    assert (out / "submission_eval" / "per_class_lwlrap.png").exists()
