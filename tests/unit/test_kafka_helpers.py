"""Kafka consumers are configured in one function, ``etar.topics.consumer_config``."""

from __future__ import annotations

import re

from etar.config import Settings
from etar.topics import consumer_config
from tests import REPO_ROOT


def test_a_consumer_commits_only_by_hand_in_the_group_it_is_given() -> None:
    settings = Settings(_env_file=None, kafka_bootstrap_servers="broker:9092")
    config = consumer_config(settings, "etar-sink", {"auto.offset.reset": "earliest"})
    assert config == {"bootstrap.servers": "broker:9092", "group.id": "etar-sink",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"}


def test_a_reader_without_a_group_gets_a_throwaway_one() -> None:
    settings = Settings(_env_file=None)
    first, second = consumer_config(settings), consumer_config(settings)
    assert first["group.id"] != second["group.id"]
    assert first["group.id"].startswith("etar-reader-")


def test_the_pipeline_builds_no_consumer_config_of_its_own() -> None:
    """Only ``etar.topics`` builds librdkafka consumer settings (the embedded registry, in the
    stack, reads its own log with its own)."""
    builds = re.compile(r"\bConsumer\(\s*\{")
    sources = [p for folder in ("etar", "dags", "dashboard", "benchmarks")
               for p in (REPO_ROOT / folder).rglob("*.py")
               if "native" not in p.relative_to(REPO_ROOT).parts]
    assert [str(p.relative_to(REPO_ROOT)) for p in sources if builds.search(p.read_text())] == []
