"""LLM serving simulation driven by an iteration-cost model (model.py): request sources (sources.py,
lengths.py), schedulers (schedulers.py, continuous.py, static.py), routers (routers.py), the event loop
(simulate.py), metrics and JSON (metrics.py), renderers (render.py) and capacity search (capacity.py)."""
