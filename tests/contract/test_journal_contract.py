"""The behaviour every journal shares: on disk and in memory.

Each test gets a ``backend`` that opens journals over one storage (a
directory, or a MemoryStore); opening a second journal over it is what a
broker restart looks like.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from amqpd.persistence.journal import (
    AckRecord,
    DeliveryCountRecord,
    DiskJournal,
    EnqueueRecord,
    Journal,
    JournalClosed,
    JournalError,
    JournalOptions,
    MemoryJournal,
    MemoryStore,
    MessageRecord,
    MoveRecord,
    Placement,
    PurgeRecord,
    Record,
    RecordRejected,
    RecoveredState,
)

pytestmark = pytest.mark.anyio


class Backend:
    """Opens journals over one storage, one at a time."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.directory = tmp_path / "journal"
        self.store = MemoryStore()
        self.options = JournalOptions(segment_size=4096)

    def journal(self) -> DiskJournal | MemoryJournal:
        if self.kind == "disk":
            return DiskJournal(self.directory, self.options)
        return MemoryJournal(self.store)

    def reopen(self, journal: Journal | None = None) -> RecoveredState:
        """Close ``journal`` (if given) and recover a new one over the storage."""
        if journal is not None:
            journal.flush()
            journal.close()
        fresh = self.journal()
        state = fresh.recover()
        fresh.close()
        return state


@pytest.fixture(params=["disk", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


@pytest.fixture
async def journal(backend: Backend) -> AsyncIterator[DiskJournal | MemoryJournal]:
    opened = backend.journal()
    opened.recover()
    async with opened:
        yield opened


def message(mid: int, body: bytes = b"body", **fields: int) -> MessageRecord:
    return MessageRecord(
        mid, "amq.direct", f"key.{mid}", b"\x00\x3c" + b"h", body, **fields
    )


def publish(mid: int, *queues: str, sequence: int | None = None) -> list[Record]:
    seq = mid if sequence is None else sequence
    return [message(mid), *(EnqueueRecord(q, mid, seq) for q in queues)]


def ids(state: RecoveredState, queue: str) -> list[int]:
    return [item.message.message_id for item in state.queues.get(queue, ())]


async def reopen(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> RecoveredState:
    await journal.commit()
    await journal.aclose()
    return backend.reopen()


# recovery of what was appended


def test_fresh_journal_recovers_nothing(backend: Backend) -> None:
    state = backend.reopen()
    assert dict(state.queues) == {}
    assert state.next_message_id == 1
    assert state.report.clean


async def test_message_reaching_two_queues_is_stored_once(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "a", "b"))
    assert journal.statistics().messages == 1

    state = await reopen(backend, journal)

    assert ids(state, "a") == ids(state, "b") == [1]
    assert state.queues["a"][0].message == message(1)
    assert state.queues["a"][0].message is state.queues["b"][0].message


async def test_ack_removes_the_message_from_that_queue_only(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "a", "b") + publish(2, "a"))
    journal.append(AckRecord("a", 1))

    state = await reopen(backend, journal)

    assert ids(state, "a") == [2]
    assert ids(state, "b") == [1]


async def test_message_acked_by_every_queue_is_gone(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many([*publish(1, "a", "b"), AckRecord("a", 1), AckRecord("b", 1)])
    assert journal.statistics().messages == 0

    state = await reopen(backend, journal)

    assert dict(state.queues) == {}
    assert state.report.messages == 0


async def test_queues_come_back_in_sequence_order(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "q", sequence=30))
    journal.append_many(publish(2, "q", sequence=10))
    journal.append_many(publish(3, "q", sequence=20))

    state = await reopen(backend, journal)

    assert ids(state, "q") == [2, 3, 1]
    assert [m.sequence for m in state.queues["q"]] == [10, 20, 30]


async def test_newest_delivery_count_wins(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "a", "b"))
    journal.append(DeliveryCountRecord("a", 1, 1))
    journal.append(DeliveryCountRecord("a", 1, 3))
    journal.append(DeliveryCountRecord("b", 1, 2))

    state = await reopen(backend, journal)

    assert state.queues["a"][0].delivery_count == 3
    assert state.queues["b"][0].delivery_count == 2


async def test_deadlines_and_priority_survive(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append(message(1, expires_at_ms=5_000, priority=9))
    journal.append(EnqueueRecord("a", 1, 1, expires_at_ms=4_000))
    journal.append(EnqueueRecord("b", 1, 1))

    state = await reopen(backend, journal)

    (in_a,), (in_b,) = state.queues["a"], state.queues["b"]
    assert in_a.message.priority == 9
    assert (in_a.expires_at_ms, in_a.deadline_ms) == (4_000, 4_000)
    assert (in_b.expires_at_ms, in_b.deadline_ms) == (0, 5_000)


# dead-lettering and purging


async def test_move_with_a_new_message_dead_letters_it(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "work"))
    dead = MessageRecord(2, "dlx", "work", b"x-death header", b"body")
    targets = (Placement("dlq", 7), Placement("audit", 1))
    journal.append(MoveRecord("work", 1, targets, dead))

    state = await reopen(backend, journal)

    assert "work" not in state.queues
    assert state.queues["dlq"][0].message == dead
    assert state.queues["dlq"][0].sequence == 7
    assert ids(state, "audit") == [2]
    assert state.report.messages == 1
    assert state.next_message_id == 3


async def test_move_without_a_new_message_keeps_its_id(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "work", "other"))
    journal.append(DeliveryCountRecord("work", 1, 4))
    journal.append(MoveRecord("work", 1, (Placement("dlq", 1),)))

    state = await reopen(backend, journal)

    assert ids(state, "dlq") == ids(state, "other") == [1]
    assert state.queues["dlq"][0].delivery_count == 0
    assert "work" not in state.queues


async def test_move_back_into_the_source_queue_takes_the_new_place(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "q") + publish(2, "q"))
    journal.append(MoveRecord("q", 1, (Placement("q", 3),)))

    state = await reopen(backend, journal)

    assert ids(state, "q") == [2, 1]


async def test_move_without_targets_drops_the_message(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "q"))
    journal.append(MoveRecord("q", 1))

    state = await reopen(backend, journal)

    assert dict(state.queues) == {}


async def test_purge_empties_one_queue(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    for mid in range(1, 6):
        journal.append_many(publish(mid, "a", "b"))
    journal.append(PurgeRecord("a"))
    journal.append_many(publish(6, "a"))

    state = await reopen(backend, journal)

    assert ids(state, "a") == [6]
    assert ids(state, "b") == [1, 2, 3, 4, 5]


# what is refused


REJECTED: list[tuple[str, list[Record]]] = [
    ("enqueue of an unknown message", [EnqueueRecord("q", 99, 1)]),
    ("message id already live", [message(1)]),
    ("same message twice in a queue", [EnqueueRecord("q", 1, 5)]),
    ("ack of a message not in the queue", [AckRecord("other", 1)]),
    ("count for a message not in the queue", [DeliveryCountRecord("x", 1, 1)]),
    ("move from a queue without it", [MoveRecord("x", 1, (Placement("y", 1),))]),
    ("move naming a target twice", [MoveRecord("q", 1, (Placement("y", 1),) * 2)]),
    (
        "move onto a live message id",
        [MoveRecord("q", 1, (Placement("y", 1),), message(1))],
    ),
    ("new message moved nowhere", [MoveRecord("q", 1, (), message(2))]),
    ("priority out of range", [MessageRecord(5, "", "", b"", b"", priority=300)]),
]


@pytest.mark.parametrize(
    "records", [case[1] for case in REJECTED], ids=[case[0] for case in REJECTED]
)
async def test_contradicting_records_are_rejected_and_change_nothing(
    backend: Backend, journal: DiskJournal | MemoryJournal, records: list[Record]
) -> None:
    journal.append_many(publish(1, "q"))
    lsn = journal.appended_lsn
    for record in records:
        with pytest.raises(RecordRejected):
            journal.append(record)
    assert journal.appended_lsn == lsn

    state = await reopen(backend, journal)

    assert {queue: ids(state, queue) for queue in state.queues} == {"q": [1]}


async def test_appends_after_close_are_refused(
    journal: DiskJournal | MemoryJournal,
) -> None:
    await journal.aclose()
    with pytest.raises(JournalClosed):
        journal.append(message(1))


async def test_recover_runs_once(journal: DiskJournal | MemoryJournal) -> None:
    with pytest.raises(JournalError, match="once"):
        journal.recover()


# durability signals


async def test_durability_is_signalled_in_lsn_order(
    journal: DiskJournal | MemoryJournal,
) -> None:
    seen: list[tuple[int, JournalError | None]] = []
    first = journal.append_many(publish(1, "q"))
    second = journal.append_many(publish(2, "q"))
    journal.on_durable(first, lambda error: seen.append((first, error)))
    journal.on_durable(second, lambda error: seen.append((second, error)))

    await journal.commit()

    assert seen == [(first, None), (second, None)]
    assert journal.durable_lsn == journal.appended_lsn == second
    late: list[JournalError | None] = []
    journal.on_durable(first, late.append)
    assert late == [None]


async def test_next_message_id_is_above_every_stored_id(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(41, "q") + publish(7, "q"))

    state = await reopen(backend, journal)

    assert state.next_message_id == 42


# reading bodies back (the pager's read-by-id)


async def test_live_bodies_are_read_back_by_message_id(
    backend: Backend, journal: DiskJournal | MemoryJournal
) -> None:
    journal.append_many(publish(1, "a", "b") + publish(2, "a"))
    journal.append(MoveRecord("a", 2, (Placement("dlq", 9),), message(3, b"dead")))
    await journal.commit()

    for mid, body in ((1, b"body"), (3, b"dead")):
        handle = journal.locate(mid)
        assert handle is not None
        assert journal.read_body(handle) == body
    assert journal.locate(2) is None  # moved out under a new id
    assert journal.locate(99) is None

    journal.append(AckRecord("a", 1))
    assert journal.locate(1) is not None  # queue b still holds it
    journal.append(AckRecord("b", 1))
    assert journal.locate(1) is None


async def test_bodies_are_read_back_after_a_restart(backend: Backend) -> None:
    first = backend.journal()
    first.recover()
    big = bytes(range(256)) * 40  # compressed on disk
    first.append_many([message(1, big), EnqueueRecord("q", 1, 1)])
    first.flush()
    first.close()

    again = backend.journal()
    again.recover()
    handle = again.locate(1)
    assert handle is not None and again.read_body(handle) == big
    again.close()


# everything together, against a model


class Model:
    """What the queues should hold: queue -> message id -> (sequence, count)."""

    def __init__(self) -> None:
        self.queues: dict[str, dict[int, tuple[int, int]]] = {}
        self.bodies: dict[int, bytes] = {}
        self.next_id = 1
        self.next_seq = 1

    def entries(self) -> list[tuple[str, int]]:
        return [(q, m) for q, entries in self.queues.items() for m in entries]

    def expect(self) -> dict[str, list[tuple[int, int, int, bytes]]]:
        return {
            q: sorted((seq, m, count, self.bodies[m]) for m, (seq, count) in e.items())
            for q, e in self.queues.items()
            if e
        }


def got(state: RecoveredState) -> dict[str, list[tuple[int, int, int, bytes]]]:
    return {
        q: [
            (m.sequence, m.message.message_id, m.delivery_count, m.message.body)
            for m in ms
        ]
        for q, ms in state.queues.items()
    }


def random_step(rng: random.Random, model: Model) -> list[Record]:
    queues = ["a", "b", "c", "d"]
    entries = model.entries()
    roll = rng.random()
    if roll < 0.4 or not entries:
        mid, model.next_id = model.next_id, model.next_id + 1
        body = rng.randbytes(rng.choice((8, 60, 300)))
        model.bodies[mid] = body
        chosen = rng.sample(queues, rng.randint(1, 3))
        records: list[Record] = [MessageRecord(mid, "ex", "rk", b"h", body)]
        for q in chosen:
            model.next_seq += 1
            model.queues.setdefault(q, {})[mid] = (model.next_seq, 0)
            records.append(EnqueueRecord(q, mid, model.next_seq))
        return records
    queue, mid = rng.choice(entries)
    if roll < 0.75:
        del model.queues[queue][mid]
        return [AckRecord(queue, mid)]
    if roll < 0.85:
        seq, count = model.queues[queue][mid]
        model.queues[queue][mid] = (seq, count + 1)
        return [DeliveryCountRecord(queue, mid, count + 1)]
    if roll < 0.98:
        del model.queues[queue][mid]
        targets = rng.sample(queues, rng.randint(0, 2))
        new = None
        target_id = mid
        if rng.random() < 0.5 and targets:
            target_id, model.next_id = model.next_id, model.next_id + 1
            model.bodies[target_id] = model.bodies[mid]
            new = MessageRecord(target_id, "dlx", "rk", b"x-death", model.bodies[mid])
        placements = []
        for q in targets:
            if target_id in model.queues.get(q, {}):
                continue
            model.next_seq += 1
            model.queues.setdefault(q, {})[target_id] = (model.next_seq, 0)
            placements.append(Placement(q, model.next_seq))
        if new is not None and not placements:
            new = None
        return [MoveRecord(queue, mid, tuple(placements), new)]
    model.queues[queue] = {}
    return [PurgeRecord(queue)]


def apply_all(journal: Journal, records: Sequence[Record]) -> None:
    journal.append_many(records)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_match_a_model_across_reopens(
    backend: Backend, seed: int
) -> None:
    rng = random.Random(seed)
    model = Model()
    journal = backend.journal()
    journal.recover()
    compactions = deletions = 0
    for step in range(900):
        apply_all(journal, random_step(rng, model))
        if step % 25 == 24:
            journal.flush()
            # every live body reads back, whatever was compacted or deleted
            for _queue, mid in model.entries():
                handle = journal.locate(mid)
                assert handle is not None, f"seed {seed} step {step} message {mid}"
                assert journal.read_body(handle) == model.bodies[mid]
        if step % 300 == 299:
            stats = journal.statistics()
            compactions += stats.compactions
            deletions += stats.deleted_segments
            state = backend.reopen(journal)
            assert got(state) == model.expect(), f"seed {seed} step {step}"
            assert state.report.clean
            journal = backend.journal()
            journal.recover()
    state = backend.reopen(journal)
    assert got(state) == model.expect()
    if backend.kind == "disk":
        assert compactions > 0 and deletions > 0
        stats_journal = DiskJournal(backend.directory, backend.options)
        stats_journal.recover()
        stats_journal.flush()
        live = stats_journal.statistics()
        stats_journal.close()
        assert live.live_bytes >= 0.45 * (live.total_bytes - 16 * live.segments)


def test_both_journals_follow_the_interface(tmp_path: Path) -> None:
    journals: list[Journal] = [DiskJournal(tmp_path), MemoryJournal()]
    for journal in journals:
        journal.recover()
        with pytest.raises(TypeError, match="not a journal record"):
            journal.append("MESSAGE 1")  # type: ignore[arg-type]
        journal.close()
