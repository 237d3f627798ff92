"""Regenerates docs/gunicorn-settings.md from a walk over gunicorn's KNOWN_SETTINGS.

    .venv/bin/python python-tests/gen_gunicorn_settings.py [RWSGI_BIN]

The same walk runs in test_gunicorn_settings.py, which fails when the file is stale.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gunicorn_walk  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "gunicorn-settings.md"


def main() -> int:
    rwsgi = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "RWSGI_BIN", str(REPO / "target" / "debug" / "rwsgi"))
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    with tempfile.TemporaryDirectory() as d:
        results = gunicorn_walk.Walk(rwsgi, Path(d), env).run()
    bad = [p for r in results for p in gunicorn_walk.problems(r)]
    if bad:
        print("the walk found problems; not writing the table:", *bad, sep="\n  ", file=sys.stderr)
        return 1
    DOC.write_text(gunicorn_walk.markdown(results))
    print(f"wrote {DOC.relative_to(REPO)} ({len(results)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
