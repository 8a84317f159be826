"""The endpoint registry: every fact about a synced endpoint, in one ordered table.

An entry names the Gestimum endpoint (its wire format lives in `gestimum/catalog.py`),
the CRM relation that feeds it, the field carrying its key, its parent endpoint, the
order its rows are read in, whether its keys are compared without case, and its mapper
(in `sync/mapping.py`). The asset graph, its checks, the state store, the engine, the
CLI, the demo and the bench all derive what they need from here, so adding an endpoint
is one entry plus its mapper (docs/changing.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from gestimum_pipeline.gestimum import catalog
from gestimum_pipeline.gestimum.catalog import Endpoint
from gestimum_pipeline.gestimum.encoding import LineEncoder
from gestimum_pipeline.sync import mapping
from gestimum_pipeline.sync.mapping import DEFAULT_ACCOUNT_PREFIX, Mapper

# (line encoder, account prefix) -> the endpoint's mapper; endpoints without accounts ignore the prefix.
MapperFactory = Callable[[LineEncoder, str], Mapper]


@dataclass(frozen=True)
class EndpointSpec:
    wire: Endpoint  # Gestimum's side: path, envelope, field codes, idempotence
    relation: str  # the CRM relation (crm/contract.py) whose rows become this endpoint's lines
    key_field: str  # the field carrying the record's key, named in duplicate-key rejections
    mapper: MapperFactory
    parent: str | None = None  # rows wait (held) until their parent record of this endpoint imports
    order_by: tuple[str, ...] | None = None  # None: the relation's key order
    case_folded: bool = True  # keys are codes Gestimum may compare without case

    @property
    def name(self) -> str:
        return self.wire.name

    @property
    def creates_documents(self) -> bool:
        """Each accepted request creates documents: never re-sent on its own, reconciled by an operator."""
        return not self.wire.idempotent

    def make_mapper(self, encoder: LineEncoder, account_prefix: str = DEFAULT_ACCOUNT_PREFIX) -> Mapper:
        return self.mapper(encoder, account_prefix)


class EndpointRegistry:
    """An ordered, validated table of endpoints: parents come before their children."""

    def __init__(self, specs: Iterable[EndpointSpec]) -> None:
        self._specs: tuple[EndpointSpec, ...] = tuple(specs)
        self._by_name: dict[str, EndpointSpec] = {}
        for spec in self._specs:
            if spec.name in self._by_name:
                raise ValueError(f"endpoint {spec.name!r} is registered twice")
            if spec.parent is not None and spec.parent not in self._by_name:
                raise ValueError(f"endpoint {spec.name!r}: its parent {spec.parent!r} must be registered before it")
            self._by_name[spec.name] = spec

    def __iter__(self) -> Iterator[EndpointSpec]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def relations(self) -> tuple[str, ...]:
        """The CRM relations read, each once, in registry order."""
        return tuple(dict.fromkeys(spec.relation for spec in self._specs))

    def get(self, name: str) -> EndpointSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown endpoint {name!r}; known: {', '.join(self._by_name)}") from None

    def parent_of(self, name: str) -> str | None:
        spec = self._by_name.get(name)
        return spec.parent if spec is not None else None

    def creates_documents(self, name: str) -> bool:
        """Whether `name`'s requests create documents; an unregistered name is master data."""
        spec = self._by_name.get(name)
        return spec is not None and spec.creates_documents

    def with_endpoint(self, spec: EndpointSpec) -> EndpointRegistry:
        """This registry with `spec` appended (after the parent it names)."""
        return EndpointRegistry([*self._specs, spec])


def _comptes(encoder: LineEncoder, account_prefix: str) -> Mapper:
    return mapping.comptes_mapper(encoder, account_prefix)


def _clients(encoder: LineEncoder, account_prefix: str) -> Mapper:
    return mapping.clients_mapper(encoder, account_prefix)


def _contacts(encoder: LineEncoder, _account_prefix: str) -> Mapper:
    return mapping.contacts_mapper(encoder)


def _references(encoder: LineEncoder, _account_prefix: str) -> Mapper:
    return mapping.references_mapper(encoder)


def _documents_stock(encoder: LineEncoder, _account_prefix: str) -> Mapper:
    return mapping.documents_stock_mapper(encoder)


# The order the sinks run in: parents first.
ENDPOINTS = EndpointRegistry(
    [
        EndpointSpec(catalog.COMPTES, "customers", "PCF_CODE", _comptes),
        EndpointSpec(catalog.CLIENTS, "customers", "PCF_CODE", _clients, parent="comptes"),
        EndpointSpec(catalog.CONTACTS, "contacts", "CCT_CODE", _contacts, parent="clients"),
        EndpointSpec(
            catalog.REFERENCES_CLIENTS_ARTICLES,
            "customer_item_references",
            "PCF_CODE+ART_CODE",
            _references,
            parent="clients",
        ),
        EndpointSpec(
            catalog.DOCUMENTS_STOCK,
            "stock_movements",
            "id",
            _documents_stock,
            # Grouped by document header so requests never mix headers.
            order_by=("direction", "warehouse_code", "id"),
            case_folded=False,  # keys are CRM ids, not codes
        ),
    ]
)
