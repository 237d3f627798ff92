"""The soak, CI's 60 s version (soak.py; `bench/run.sh soak` runs the same code for 30
minutes): keep-alive churn, uploads checked by CRC, chunked and Content-Length streams,
app errors and 404s on 6 clients, HUP every 10 s and --max-requests recycling, against
2 workers. After the warm-up, the RSS and open fds of the master and of the workers
grow less than 5%, and no response is an unintended 5xx or a failure.
RWSGI_SOAK_SECONDS changes the length."""

import json
import os

import pytest

import soak

SECONDS = float(os.environ.get("RWSGI_SOAK_SECONDS", "60"))


@pytest.mark.timeout(SECONDS + 120)
def test_soak_memory_and_fds_stay_flat(rwsgi_bin, tmp_path):
    figures = soak.run(rwsgi_bin, SECONDS, tmp_path / "soak")
    print(json.dumps({k: figures[k] for k in ("counts", "growth", "hups", "recycled")}, indent=1))
    counts = figures["counts"]
    assert figures["failures"] == [], figures["failures"]
    assert counts.get("failures", 0) == 0
    # Every kind of load ran, and both kinds of worker replacement happened.
    for kind in ("status_200", "status_404", "status_500", "uploaded_bytes"):
        assert counts.get(kind, 0) > 0, f"no {kind} in {counts}"
    assert figures["hups"] >= 2
    assert figures["recycled"] >= 1, "no worker reached --max-requests"
    assert len(figures["at_end"]["workers"]) == 2, figures["at_end"]["workers"]
    for key, g in figures["growth"].items():
        assert g < 0.05, (f"{key} grew {g:+.1%} after the warm-up: "
                          f"{figures['after_warm_up'][key]} -> {figures['at_end'][key]}")
    assert figures["exit_code"] == 0
