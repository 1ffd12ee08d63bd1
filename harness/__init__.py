"""The test and benchmark harness: loopback servers, scripted OpenAI-compatible upstreams and
tiny random PRM checkpoints. Used by ``tests/`` and ``bench/``; not shipped in the wheel.
"""
