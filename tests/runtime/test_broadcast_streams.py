"""A broadcast's inbox items on live streams held by either process of ``tidings serve
--processes 2``: the chunk that decides a listener crosses to the other process as one
packed message (:meth:`tidings.queue.inbox_hub.PeerHub.publish_items`), and each stream
shows its item once."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx

from testbed.harness import Server, wait_for

SIZE = 2500
LISTENERS = ("m-00000", "m-01234", "m-02499")  # in the first, second and last chunk


def _listen(response: httpx.Response, seen: list[dict[str, Any]], stop: threading.Event) -> None:
    try:
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "item":
                seen.append(json.loads(line[6:]))
            if stop.is_set():
                return
    except httpx.HTTPError:
        return


def test_each_stream_shows_its_broadcast_item_once_whichever_process_decided_it(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path, processes=2).start(timeout=60)
    stop = threading.Event()
    clients: list[httpx.Client] = []
    responses: list[httpx.Response] = []
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        admin = server.client()
        admin.put("/v1/topics/campaign.streams", json={"name": "streams"}).raise_for_status()
        members = [f"m-{i:05d}" for i in range(SIZE)]
        added = admin.post("/v1/topics/campaign.streams/subscribers", json={"add": members})
        added.raise_for_status()
        for subscriber_id in LISTENERS:  # a stream on each process, new connections until so
            token = server.token(subscriber_id)
            for _ in range(40):
                if all((subscriber_id, p) in seen for p in ("0", "1")):
                    break
                client = httpx.Client(timeout=httpx.Timeout(30, read=90))
                clients.append(client)
                response = client.send(
                    client.build_request(
                        "GET",
                        f"{server.url}/v1/inbox/stream",
                        headers={"Authorization": f"Bearer {token}"},
                    ),
                    stream=True,
                )
                responses.append(response)
                key = (subscriber_id, response.headers["x-tidings-process"])
                if key in seen:
                    response.close()
                    continue
                seen[key] = []
                args = (response, seen[key], stop)
                threading.Thread(target=_listen, args=args, daemon=True).start()
        assert len(seen) == 2 * len(LISTENERS), sorted(seen)
        body = {
            "id": "streamed",
            "audience": {"topic": "campaign.streams"},
            "category": "marketing",
            "channels": ["inapp"],
            "content": {"en-US": {"title": "Double 11", "body": "{{ name }} starts now"}},
            "data": {"name": "The flash sale"},
        }
        admin.post("/v1/broadcasts", json=body).raise_for_status()
        wait_for(lambda: all(len(items) >= 1 for items in seen.values()), timeout=60)
        state = wait_for(
            lambda: (b := admin.get("/v1/broadcasts/streamed").json())["status"] == "done" and b,
            timeout=60,
        )
        assert state["counts"]["sent"] == SIZE
        ids = set()
        for items in seen.values():  # a stream is its subscriber's: its own item, once
            assert [(i["title"], i["body"]) for i in items] == [
                ("Double 11", "The flash sale starts now")
            ]
            assert items[0]["notification_id"] is None and items[0]["read"] is False
            ids.add(items[0]["id"])
        assert len(ids) == len(LISTENERS)  # both processes' streams show the same item
    finally:
        stop.set()
        for response in responses:
            response.close()
        for client in clients:
            client.close()
        server.stop()
