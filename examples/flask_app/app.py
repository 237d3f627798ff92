"""A small Flask app: `rwsgi --chdir examples/flask_app app:app`.

Routes: `/` (text), `/api/items` (JSON list, POST JSON to add), `/api/items/<id>`
(JSON or 404), `/form` (GET shows an HTML form, POST echoes the submitted name),
`/upload` (multipart file upload: size and name), `/boom` (raises: a 500).
"""

from flask import Flask, abort, jsonify, request
from markupsafe import escape

app = Flask(__name__)

ITEMS = {1: {"id": 1, "name": "first"}}


@app.get("/")
def index():
    return "Hello from Flask\n"


@app.get("/api/items")
def list_items():
    return jsonify(items=list(ITEMS.values()))


@app.post("/api/items")
def add_item():
    data = request.get_json(force=True)
    item_id = max(ITEMS, default=0) + 1
    ITEMS[item_id] = {"id": item_id, "name": str(data["name"])}
    return jsonify(ITEMS[item_id]), 201


@app.get("/api/items/<int:item_id>")
def get_item(item_id):
    if item_id not in ITEMS:
        abort(404)
    return jsonify(ITEMS[item_id])


@app.route("/form", methods=["GET", "POST"])
def form():
    if request.method == "POST":
        name = request.form.get("name", "")
        return f"<p>Hello, {escape(name)}!</p>"
    return ('<form method="post"><input name="name"><button>Send</button></form>',
            200, {"Content-Type": "text/html; charset=utf-8"})


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data))


@app.get("/boom")
def boom():
    raise RuntimeError("flask example failure")
