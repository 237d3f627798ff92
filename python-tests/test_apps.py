"""The example apps served for real: examples/hello (plain WSGI), examples/flask_app
(text, JSON, a form POST, a multipart upload, a 404 and a 500), and
examples/django_project (a form POST with CSRF that writes to sqlite, a POST without
the token refused, the admin login page, a real admin login); and examples/nginx.conf
in front of rwsgi with the X-RequestTime stamp reaching the app."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests

from conftest import EXAMPLES, free_port

TIMEOUT = 15


# ---------------------------------------------------------------------------
# hello
# ---------------------------------------------------------------------------


def test_hello_example(start_server):
    srv = start_server("app:application", chdir=EXAMPLES / "hello")
    r = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.text == "Hello, World!\n"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


# ---------------------------------------------------------------------------
# Flask
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flask_server(module_server_factory):
    return module_server_factory("app:app", "--threads", "4", chdir=EXAMPLES / "flask_app")


def test_flask_text(flask_server):
    r = requests.get(flask_server.url + "/", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "Hello from Flask\n")


def test_flask_json(flask_server):
    r = requests.post(flask_server.url + "/api/items", json={"name": "second"}, timeout=TIMEOUT)
    assert r.status_code == 201
    new_id = r.json()["id"]
    r = requests.get(flask_server.url + f"/api/items/{new_id}", timeout=TIMEOUT)
    assert r.json() == {"id": new_id, "name": "second"}
    assert r.headers["Content-Type"] == "application/json"
    names = [i["name"] for i in requests.get(flask_server.url + "/api/items", timeout=TIMEOUT).json()["items"]]
    assert "first" in names and "second" in names


def test_flask_form_post(flask_server):
    assert "<form" in requests.get(flask_server.url + "/form", timeout=TIMEOUT).text
    r = requests.post(flask_server.url + "/form", data={"name": "Zoë & co"}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.text == "<p>Hello, Zoë &amp; co!</p>"


def test_flask_multipart_upload(flask_server):
    payload = os.urandom(300_000)
    r = requests.post(flask_server.url + "/upload", files={"file": ("blob.bin", payload)}, timeout=TIMEOUT)
    assert r.json() == {"filename": "blob.bin", "size": len(payload)}


def test_flask_404_and_500(flask_server):
    assert requests.get(flask_server.url + "/api/items/999", timeout=TIMEOUT).status_code == 404
    r = requests.get(flask_server.url + "/boom", timeout=TIMEOUT)
    assert r.status_code == 500
    assert requests.get(flask_server.url + "/", timeout=TIMEOUT).status_code == 200
    flask_server.wait_for_log("flask example failure", timeout=5)


def test_flask_keep_alive_session(flask_server):
    with requests.Session() as s:
        for _ in range(20):
            assert s.get(flask_server.url + "/api/items", timeout=TIMEOUT).status_code == 200


# ---------------------------------------------------------------------------
# Django
# ---------------------------------------------------------------------------

DJANGO_DIR = EXAMPLES / "django_project"
ADMIN_PASSWORD = "pw-for-tests-only-51b2"


@pytest.fixture(scope="module")
def django_server(module_server_factory, tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("djangodb")
    env = dict(os.environ, DJANGO_DB_DIR=str(db_dir), DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
               DJANGO_SETTINGS_MODULE="mysite.settings")
    for cmd in (["migrate", "--noinput"],
                ["createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"]):
        p = subprocess.run([sys.executable, "manage.py", *cmd], cwd=DJANGO_DIR, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
    return module_server_factory("mysite.wsgi:application", "--threads", "4", chdir=DJANGO_DIR,
                                 env={"DJANGO_DB_DIR": str(db_dir)})


def csrf_token(html):
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert m, "no csrfmiddlewaretoken in the page"
    return m.group(1)


def test_django_form_post_with_csrf(django_server):
    with requests.Session() as s:
        r = s.get(django_server.url + "/", timeout=TIMEOUT)
        assert r.status_code == 200
        assert "csrftoken" in s.cookies
        token = csrf_token(r.text)
        r = s.post(django_server.url + "/", data={"csrfmiddlewaretoken": token, "name": "Ada",
                                                  "message": "Hello from rwsgi"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:2000]
        assert "Thanks for signing, Ada!" in r.text
    entries = requests.get(django_server.url + "/entries/", timeout=TIMEOUT).json()["entries"]
    assert {"name": "Ada", "message": "Hello from rwsgi"} in entries


def test_django_post_without_csrf_refused(django_server):
    r = requests.post(django_server.url + "/", data={"name": "Eve", "message": "forged"}, timeout=TIMEOUT)
    assert r.status_code == 403
    entries = requests.get(django_server.url + "/entries/", timeout=TIMEOUT).json()["entries"]
    assert all(e["name"] != "Eve" for e in entries)


def test_django_admin_login_page_renders(django_server):
    r = requests.get(django_server.url + "/admin/login/?next=/admin/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert "Django administration" in r.text
    assert 'name="username"' in r.text and 'name="password"' in r.text
    csrf_token(r.text)


def test_django_admin_login(django_server):
    with requests.Session() as s:
        r = s.get(django_server.url + "/admin/login/?next=/admin/", timeout=TIMEOUT)
        token = csrf_token(r.text)
        r = s.post(django_server.url + "/admin/login/?next=/admin/",
                   data={"csrfmiddlewaretoken": token, "username": "admin", "password": ADMIN_PASSWORD,
                         "next": "/admin/"},
                   allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 302, r.text[:2000]
        assert r.headers["Location"] == "/admin/"
        r = s.get(django_server.url + "/admin/", timeout=TIMEOUT)
        assert r.status_code == 200
        assert "Site administration" in r.text


def test_django_admin_requires_login(django_server):
    r = requests.get(django_server.url + "/admin/", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/admin/login/")


def test_django_404(django_server):
    assert requests.get(django_server.url + "/nope/", timeout=TIMEOUT).status_code == 404


# ---------------------------------------------------------------------------
# nginx in front
# ---------------------------------------------------------------------------


@pytest.fixture
def nginx_in_front(start_server, tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is not installed (scripts/test.sh installs it)"
    srv = start_server("apps.wsgi_rules:application", "--threads", "2",
                       "--queue-header", "X-RequestTime")
    port = free_port()
    conf = (EXAMPLES / "nginx.conf").read_text()
    assert "127.0.0.1:8000" in conf and "127.0.0.1:8080" in conf
    conf = conf.replace("127.0.0.1:8000", f"127.0.0.1:{srv.port}").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    if os.geteuid() == 0:
        # nginx's workers would drop to "nobody", who cannot enter pytest's 0700 temp dirs.
        conf = "user root;\n" + conf
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(conf)
    err = open(tmp_path / "nginx.stderr", "wb")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                             "-e", str(prefix / "error.log")],
                            stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (tmp_path / "nginx.stderr").read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        yield srv, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        err.close()


def test_nginx_example_stamps_request_time(nginx_in_front):
    srv, url = nginx_in_front
    before = time.time()
    r = requests.get(url + "/environ?via=nginx", timeout=TIMEOUT)
    after = time.time()
    assert r.status_code == 200
    env = r.json()["environ"]
    stamp = float(env["HTTP_X_REQUESTTIME"])
    assert before - 1 <= stamp <= after + 1
    assert env["QUERY_STRING"] == "via=nginx"
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"


def test_nginx_stamp_gives_queue_time(nginx_in_front):
    srv, url = nginx_in_front
    env = requests.get(url + "/environ", timeout=TIMEOUT).json()["environ"]
    qt = env["rwsgi.queue_time"]
    assert isinstance(qt, float) and 0 <= qt < 2, qt


def test_nginx_example_passes_bodies(nginx_in_front):
    srv, url = nginx_in_front
    payload = os.urandom(2_000_000)
    r = requests.post(url + "/echo", data=payload, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == payload
