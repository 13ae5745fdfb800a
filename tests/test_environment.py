"""The test environment itself: the oracle is the exact pinned version, and CI never skips the real-data tests."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import PROJECT_ROOT, installed_oracle_version, pinned_oracle_version


def test_oracle_is_the_pinned_version():
    assert pinned_oracle_version() != "not pinned"
    assert installed_oracle_version() == pinned_oracle_version()


def test_missing_shared_data_fails_under_ci(tmp_path):
    """A checkout without ../shared beside it: the real-data tests fail under CI=true and skip otherwise."""
    checkout = tmp_path / "yf"
    (checkout / "tests").mkdir(parents=True)
    (checkout / "tests" / "conftest.py").write_text((PROJECT_ROOT / "tests" / "conftest.py").read_text())
    (checkout / "requirements-dev.txt").write_text((PROJECT_ROOT / "requirements-dev.txt").read_text())
    (checkout / "tests" / "test_uses_data.py").write_text("def test_it(shared_data):\n    assert shared_data\n")
    outcomes = {}
    for ci in ("true", ""):
        env = {**os.environ, "CI": ci}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(checkout)],
                                capture_output=True, text=True, env=env, cwd=checkout)
        outcomes[ci] = (result.returncode, result.stdout)
    assert outcomes["true"][0] == 1 and "1 error" in outcomes["true"][1]  # a failing fixture is an error
    assert "CI must have ../shared/data" in outcomes["true"][1]
    assert outcomes[""][0] == 0 and "1 skipped" in outcomes[""][1]
