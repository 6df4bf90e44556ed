"""A FastAPI app returning a small JSON object: a typical ASGI framework workload."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def index() -> dict[str, object]:
    return {"message": "Hello, world!", "id": 1, "ok": True}
