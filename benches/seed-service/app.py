"""A seed-style ingest service: the FastAPI batching pipeline a team writes before it has Sluice.

JSON in on the route Sluice's producer serves (`POST /v1/streams/{stream}/events`, a bearer key), the whole batch
validated by a pydantic model that mirrors `schemas/avro/event.avsc` (unknown fields refused), server-side
`event_id`, `tenant` and `received_at` added, each event produced as JSON with confluent-kafka using the producer
settings Sluice uses (acks=all, idempotence, lz4, linger 5 ms), and 202 only once every delivery report came
back. It is the benchmark's second peer (`sluice-bench --phases ingest,seed`), run by uvicorn with uvloop and
httptools, one process per worker, each with its own Kafka producer and delivery-report thread.

Settings come from the environment: SEED_KAFKA (bootstrap servers), SEED_TOPIC, SEED_KEY (the accepted key),
SEED_TENANT.
"""

import asyncio
import json
import os
import threading
import time
import uuid
from datetime import datetime
from typing import Optional, Union

from confluent_kafka import KafkaException, Producer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

KAFKA = os.environ.get("SEED_KAFKA", "127.0.0.1:9092")
TOPIC = os.environ.get("SEED_TOPIC", "seed_events")
KEY = os.environ.get("SEED_KEY", "dev-key")
TENANT = os.environ.get("SEED_TENANT", "demo")


class Event(BaseModel):
    """One event of the `events` stream, as clients send it."""

    model_config = ConfigDict(extra="forbid")

    event_id: Optional[uuid.UUID] = None
    event_type: str = Field(max_length=65536)
    occurred_at: Union[int, datetime]
    source: Optional[str] = None
    user_id: Optional[str] = None
    anonymous_id: Optional[str] = None
    session_id: Optional[str] = None
    trace_id: Optional[str] = None
    properties: dict[str, str] = {}


BATCH = TypeAdapter(list[Event])
ONE = TypeAdapter(Event)

producer = Producer(
    {
        "bootstrap.servers": KAFKA,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 1048576,
        "queue.buffering.max.messages": 200000,
    }
)


def _poll_forever() -> None:
    # Delivery reports run inside poll(); a thread of their own keeps them off the event loop.
    while True:
        producer.poll(0.1)


threading.Thread(target=_poll_forever, name="delivery-reports", daemon=True).start()

app = FastAPI()


def _settle(fut: asyncio.Future, err) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaException(err))


@app.get("/readyz")
async def readyz() -> dict:
    return {"ready": True}


@app.post("/v1/streams/{stream}/events")
async def ingest(stream: str, request: Request):
    if request.headers.get("authorization") != f"Bearer {KEY}":
        return JSONResponse(status_code=401, content={"error": "bad key"})
    body = await request.body()
    try:
        if body.lstrip()[:1] == b"[":
            events = BATCH.validate_json(body)
        else:
            events = [ONE.validate_json(body)]
    except ValidationError as e:
        return JSONResponse(status_code=400, content={"errors": json.loads(e.json(include_url=False))})
    if not events:
        return JSONResponse(status_code=400, content={"error": "empty batch"})
    loop = asyncio.get_running_loop()
    received_at = int(time.time() * 1000)
    futures = []
    ids = []
    try:
        for ev in events:
            record = ev.model_dump(mode="json")
            event_id = record["event_id"] or str(uuid.uuid4())
            record["event_id"] = event_id
            record["tenant"] = TENANT
            record["received_at"] = received_at
            if isinstance(ev.occurred_at, datetime):
                record["occurred_at"] = int(ev.occurred_at.timestamp() * 1000)
            fut = loop.create_future()
            producer.produce(
                TOPIC,
                json.dumps(record, separators=(",", ":")).encode(),
                key=TENANT,
                on_delivery=lambda err, _msg, f=fut: loop.call_soon_threadsafe(_settle, f, err),
            )
            futures.append(fut)
            ids.append(event_id)
    except BufferError:
        # What was queued is still awaited below, so the 503 is honest about what may have been written.
        await asyncio.gather(*futures, return_exceptions=True)
        return JSONResponse(status_code=503, content={"error": "producer queue full"}, headers={"Retry-After": "1"})
    results = await asyncio.gather(*futures, return_exceptions=True)
    if any(isinstance(r, Exception) for r in results):
        return JSONResponse(status_code=503, content={"error": "not acknowledged by Kafka"})
    return JSONResponse(status_code=202, content={"accepted": len(events), "event_ids": ids})
