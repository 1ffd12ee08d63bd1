"""The experiment store: side-by-side records of our answer and a baseline's (shadow A/B on live
traffic), and the prices that turn tokens into dollars. Used by ``proxy`` (writes) and ``tts_eval``
(reports); imports neither.

``experiments.store`` (SQLAlchemy, the ``store`` extra) is imported on its own, so the records and
prices work without the extra installed.
"""

from experiments.pricing import Price, api_cost
from experiments.records import Comparison, Side, SideStatus, answers_agree

__all__ = ["Comparison", "Price", "Side", "SideStatus", "answers_agree", "api_cost"]
