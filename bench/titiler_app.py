"""The TiTiler baseline of `bench.tiles`: titiler.core's `TilerFactory` over a COG path
(`?url=`), as its documentation sets it up, served by uvicorn in its own process."""

from fastapi import FastAPI
from titiler.core.factory import TilerFactory

app = FastAPI(title="TiTiler baseline")
app.include_router(TilerFactory().router, prefix="/cog")
