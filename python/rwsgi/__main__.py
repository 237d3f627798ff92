"""``python -m rwsgi ARGS``: the same as ``rwsgi ARGS`` with this interpreter."""

from rwsgi._launch import main

if __name__ == "__main__":
    main()
