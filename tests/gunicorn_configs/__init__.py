"""gunicorn config files as real projects write them: the corpus issue 17 is judged by.

Each file is run under real gunicorn and under the supervisor by
tests/e2e/test_gunicorn_corpus_e2e.py (through tests/e2e/gunicorn_compare.py).
They read the address to bind (BIND, or HOST/PORT), certificate paths and a
scratch directory (WORKDIR) from the environment the test gives them, and their
hooks append what they saw to $HOOK_LOG (see _hooklog.py).
"""
