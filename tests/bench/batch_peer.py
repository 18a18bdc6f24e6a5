#!/usr/bin/python3
"""The batch scenario's peer: the same batch as `sluice batch`, written the way
one would in Python: asyncio + aiohttp (Debian's python3-aiohttp), a
semaphore of CONCURRENCY, every request streamed (stream: true, the SSE
`data:` lines parsed and the text assembled), one output line a request in
the OpenAI Batch output shape (id, custom_id, response {status_code,
request_id, body: a chat.completion}, error), each written whole as it ends.

    batch_peer.py BASE_URL INPUT OUTPUT CONCURRENCY

Prints {"completed": N, "failed": N} at the end; the driver measures its CPU
and memory from outside, as for the other clients.
"""
import asyncio
import hashlib
import json
import os
import sys
import time

import aiohttp


def chat_completion(req_body, chunks_state):
    """The chat.completion object the non-streaming endpoint would return."""
    st = chunks_state
    return {
        "id": st["id"],
        "object": "chat.completion",
        "created": st["created"] or int(time.time()),
        "model": st["model"] or req_body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(st["text"])},
                "finish_reason": st["finish_reason"],
                "logprobs": None,
            }
        ],
        "usage": st["usage"],
    }


async def run_one(session, url, headers, line):
    """Streams one request of the batch file; returns its output record."""
    req = json.loads(line)
    cid = req["custom_id"]
    body = dict(req["body"], stream=True, stream_options={"include_usage": True})
    record = {
        "id": "batch_req_" + hashlib.blake2b(cid.encode(), digest_size=8).hexdigest(),
        "custom_id": cid,
        "response": None,
        "error": None,
    }
    try:
        async with session.post(url, json=body, headers=dict(headers, **{"X-Request-Id": cid})) as resp:
            if resp.status != 200:
                text = await resp.text()
                try:
                    err_body = json.loads(text)
                except ValueError:
                    err_body = {"error": {"message": text}}
                record["response"] = {"status_code": resp.status, "request_id": resp.headers.get("x-request-id"),
                                      "body": err_body}
                record["error"] = {"code": "http_%d" % resp.status, "message": text[:200]}
                return record
            st = {"id": None, "created": None, "model": None, "text": [], "finish_reason": None, "usage": None}
            async for raw in resp.content:  # one line at a time
                if not raw.startswith(b"data:"):
                    continue
                data = raw[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(chunk["error"].get("message", "error event"))
                st["id"] = st["id"] or chunk.get("id")
                st["created"] = st["created"] or chunk.get("created")
                st["model"] = st["model"] or chunk.get("model")
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        st["text"].append(piece)
                    if choice.get("finish_reason"):
                        st["finish_reason"] = choice["finish_reason"]
                if chunk.get("usage"):
                    st["usage"] = chunk["usage"]
            record["response"] = {"status_code": 200, "request_id": resp.headers.get("x-request-id") or st["id"],
                                  "body": chat_completion(req["body"], st)}
    except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, ValueError) as e:
        record["error"] = {"code": type(e).__name__, "message": str(e)}
    return record


async def main(base_url, in_path, out_path, concurrency):
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {}
    if os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["OPENAI_API_KEY"]
    sem = asyncio.Semaphore(concurrency)
    counts = {"completed": 0, "failed": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    # line-buffered: each record reaches the file whole when its request ends
    with open(out_path, "a", buffering=1) as out:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(line):
                try:
                    record = await run_one(session, url, headers, line)
                    out.write(json.dumps(record) + "\n")
                    counts["failed" if record["error"] else "completed"] += 1
                finally:
                    sem.release()

            tasks = set()
            with open(in_path) as f:
                for line in f:
                    if not line.strip():
                        continue
                    await sem.acquire()  # at most CONCURRENCY requests (and tasks) at once
                    t = asyncio.create_task(one(line))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
    print(json.dumps(counts))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: batch_peer.py BASE_URL INPUT OUTPUT CONCURRENCY")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
