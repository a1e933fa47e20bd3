"""The threshold benchmark runs and agrees with its numpy reference (speed is reported, not tested)."""
from bench.thresholds import main


def test_benchmark_runs_small_and_thresholds_identical(capsys):
    result = main(["--samples", "20000", "--classes", "5", "--repeats", "1"])
    assert result["identical"] is True
    assert "speed-up" in capsys.readouterr().out
