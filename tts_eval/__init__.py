"""``tts-eval``: benchmarks through our proxy and through large APIs, graded with math-verify,
stored as JSON lines, and reported per token and per dollar (tables and plots). Also reports the
proxy's shadow comparisons from the experiment store.
"""

__all__: list[str] = []
