"""Rankflow as a service: the REST API (app.py), its request models (inputs.py), search jobs (jobs.py),
the launcher (launch.py) and the web page (static/). Needs the optional extra: pip install -e '.[server]'."""
