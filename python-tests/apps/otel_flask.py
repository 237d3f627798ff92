"""A plain Flask app for the APM launcher test: nothing in it knows about tracing."""

from flask import Flask

app = Flask(__name__)


@app.route("/hello/<name>")
def hello(name):
    return f"hello {name}"
