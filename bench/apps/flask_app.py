"""Flask returning a small JSON document: routing, request context and jsonify."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/")
def index():
    return jsonify(message="Hello, World!", items=[1, 2, 3], ok=True)


application = app
