"""Every setting of the installed gunicorn's ``gunicorn.config.KNOWN_SETTINGS``, under
every spelling gunicorn accepts, against the real rwsgi binary (see gunicorn_walk.py):
each is served, or accepted with its one documented log line, or refused with its
documented message. docs/gunicorn-settings.md is generated from the same walk and
must be current.
"""

import pytest

import gunicorn.config
import gunicorn_walk
from conftest import REPO, base_env


@pytest.fixture(scope="module")
def walk(rwsgi_bin, tmp_path_factory):
    return gunicorn_walk.Walk(rwsgi_bin, tmp_path_factory.mktemp("walk"), base_env()).run()


def test_the_walk_covers_gunicorns_own_list(walk):
    assert [r.name for r in walk] == [s.name for s in gunicorn.config.KNOWN_SETTINGS]
    spellings = sum(len(s.cli or []) + 1 for s in gunicorn.config.KNOWN_SETTINGS)
    assert sum(len(r.outcomes) for r in walk) == spellings
    assert len(walk) >= 120


def test_every_setting_and_spelling_does_what_rwsgi_documents(walk):
    bad = [p for r in walk for p in gunicorn_walk.problems(r)]
    assert not bad, "\n".join(bad)


def test_refusals_name_the_alternative(walk):
    refused = {r.name: r for r in walk if r.treatment["treatment"] == "refused"}
    assert {"daemon", "paste", "dirty_apps", "protocol"} <= set(refused)
    for r in refused.values():
        for o in r.outcomes:
            assert o.code == 1 and any(r.treatment["note"] in m for m in o.messages), o


def test_docs_table_is_current(walk):
    doc = REPO / "docs" / "gunicorn-settings.md"
    assert doc.read_text() == gunicorn_walk.markdown(walk), (
        "docs/gunicorn-settings.md is stale: run "
        ".venv/bin/python python-tests/gen_gunicorn_settings.py"
    )


def test_defaults_match_gunicorns_except_where_documented(rwsgi_bin, tmp_path):
    """For every setting rwsgi shares, rwsgi's default is gunicorn's, unless the
    table's note (docs/gunicorn-settings.md) starts with "default" and says why."""
    import subprocess
    import tomllib

    out = subprocess.run([rwsgi_bin, "--print-config", "m:app"], capture_output=True, text=True,
                         env=base_env(), cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    ours = tomllib.loads(out.stdout)
    table = {r["name"]: r for r in map(__import__("json").loads, subprocess.run(
        [rwsgi_bin, "--gunicorn-settings"], capture_output=True, text=True, check=True
    ).stdout.splitlines())}

    def empty(v):
        return v in (None, "", [], False, 0) or v == "sync"

    differ, documented = [], []
    for s in gunicorn.config.KNOWN_SETTINGS:
        t = table[s.name]
        if t["treatment"] != "same" or t["option"] in ("app", "config", "chdir"):
            continue
        theirs, mine = s.default, ours.get(t["option"])
        if t["option"] == "statsd-tag":
            mine = ",".join(mine or [])
        if empty(theirs) and empty(mine):
            continue
        if isinstance(theirs, list) and isinstance(mine, list) and theirs == mine:
            continue
        if str(theirs) == str(mine) or (isinstance(mine, float) and mine == theirs):
            continue
        (documented if t["note"].startswith("default") else differ).append(
            f"{s.name}: gunicorn {theirs!r}, rwsgi {mine!r}")
    assert not differ, "\n".join(differ)
    assert sorted(d.split(":")[0] for d in documented) == ["keepalive", "statsd_prefix"]
