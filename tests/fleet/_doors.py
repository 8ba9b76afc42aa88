"""TCP doors the fleet tests control: a round-robin load balancer in front of the replicas, and a door in
front of PostgreSQL that can hang or drop what passes through it.

    async with RoundRobin() as balancer:           # balancer.port; balancer.backends = [port_a, port_b]
        balancer.served                            # which backend (index) took each accepted connection
        balancer.pin(1)                            # every new connection to backend 1 (None: alternate again)
    async with PostgresDoor(5432) as door:         # door.port forwards to PostgreSQL
        door.hang(); door.drop(); door.forward()   # an outage that answers nothing, one that resets, the end of it
        door.server_side_ports()                   # the local ports of the door's connections to PostgreSQL
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal, Self

Mode = Literal["forward", "hang", "drop"]


async def _pump(source: asyncio.StreamReader, destination: asyncio.StreamWriter, swallow: _Swallow) -> None:
    try:
        while data := await source.read(65536):
            if swallow():
                continue  # a hung path: the bytes go nowhere, and the sender waits for an answer forever
            destination.write(data)
            await destination.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        destination.close()


class _Swallow:
    def __call__(self) -> bool:
        return False


class _TcpDoor:
    """An asyncio TCP listener on a loopback port the OS picks; subclasses say where a connection goes."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _splice(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        swallow: _Swallow,
    ) -> None:
        self._writers.add(up_writer)
        pumps = [
            asyncio.ensure_future(_pump(reader, up_writer, swallow)),
            asyncio.ensure_future(_pump(up_reader, writer, swallow)),
        ]
        try:
            # Either side closing ends the connection on both (a server that ends a session closes it whole).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._writers.discard(up_writer)
            writer.close()
            up_writer.close()


class RoundRobin(_TcpDoor):
    """A layer-4 load balancer: each new connection goes to the next backend in turn.

    Like nginx's `proxy_next_upstream error`, a backend that refuses the connection (a replica that died) is
    skipped for the next one: nothing was sent to it, so nothing can have happened twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backends: list[int] = []
        self.served: list[int] = []
        self._next = 0
        self._pinned: int | None = None

    def pin(self, backend: int | None) -> None:
        self._pinned = backend

    def _choose(self) -> int:
        if self._pinned is not None:
            return self._pinned
        index = self._next % len(self.backends)
        self._next += 1
        return index

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = self._choose()
        for offset in range(len(self.backends)):
            index = (first + offset) % len(self.backends)  # the next in line, whoever else connected meanwhile
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backends[index])
            except OSError:
                continue
            self.served.append(index)
            await self._splice(reader, writer, up_reader, up_writer, _Swallow())
            return


class _Hung(_Swallow):
    def __init__(self, door: PostgresDoor) -> None:
        self.door = door

    def __call__(self) -> bool:
        return self.door.mode == "hang"


class PostgresDoor(_TcpDoor):
    """A TCP path to PostgreSQL that the test can break.

    - "hang": new connections are accepted and answered with nothing; bytes on open ones go nowhere. A
      database host that stopped answering without closing anything: the hard case for a client.
    - "drop": every open connection is closed, and each new one is closed as soon as it is accepted.
    - "forward": back to normal. Connections that lived through a hang are closed first, since bytes were
      lost on them (their client has given up on them anyway).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        super().__init__()
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._upstream_ports: dict[asyncio.StreamWriter, int] = {}

    def hang(self) -> None:
        self.mode = "hang"
        self._resumed.clear()

    def drop(self) -> None:
        self.mode = "drop"
        self._resumed.set()
        self._close_all()

    def forward(self) -> None:
        if self.mode == "hang":
            self._close_all()
        self.mode = "forward"
        self._resumed.set()

    def server_side_ports(self) -> list[int]:
        """The local ports of this door's open connections to PostgreSQL (pg_stat_activity.client_port)."""
        return [port for writer, port in self._upstream_ports.items() if not writer.is_closing()]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "hang":
            await self._resumed.wait()  # hold it open and silent; closed when the hang ends
            return
        if self.mode == "drop":
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._upstream_ports[up_writer] = up_writer.get_extra_info("sockname")[1]
        try:
            await self._splice(reader, writer, up_reader, up_writer, _Hung(self))
        finally:
            del self._upstream_ports[up_writer]
