"""The real-world scoreboard: public training scripts run before and after migration (see benchmarks/real_world.py)."""
