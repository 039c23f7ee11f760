"""A reporting worker process for the fault suite: ``dicomnode worker`` with the tiny test
artifact (which the command refuses, rightly) and an engine slowed by a random delay.

Usage: python -m tests.e2e.fault_worker CONFIG ARTIFACT_DIR SEED MAX_DELAY
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicomnode.config import load_config
from dicomnode.db import create_db_engine, create_session_factory
from dicomnode.worker import ReportingWorker, wait_for_database
from engine.exceptions import StudyError
from engine.result import StudyReport
from engine.runtime import Engine, create_engine


class JitteryEngine:
    def __init__(self, engine: Engine, rng: random.Random, max_delay: float) -> None:
        self.engine, self.rng, self.max_delay = engine, rng, max_delay
        self.identity = engine.identity

    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]:
        time.sleep(self.rng.uniform(0, self.max_delay))
        return self.engine.report_studies(studies, return_exceptions=return_exceptions)


def main(argv: list[str]) -> int:
    config_path, artifact, seed, max_delay = argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    config = load_config(config_path)
    engine = create_engine(artifact, "onnxruntime", allow_test_artifact=True)
    db_engine = create_db_engine(config.node.effective_database_url)
    worker = ReportingWorker(
        config,
        create_session_factory(db_engine),
        JitteryEngine(engine, random.Random(int(seed)), float(max_delay)),
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    if wait_for_database(db_engine, worker.backoff):
        worker.run(poll_seconds=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
