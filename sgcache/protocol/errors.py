"""Faults as the site reports them: HTTP 200 with a top-level `exception` key.

The client maps error_code 102 to AuthenticationFault and everything else to a
plain Fault whose str() is the message, so the message text is the contract.
"""

from __future__ import annotations

from typing import Any

#: error_code values the client (or Toolkit) treats specially.
AUTH_FAILED = 102
MISSING_2FA = 106
#: error_code for ordinary API errors (bad type, field, filter, value ...).
API_ERROR = 103
#: error_code we use when the cache cannot reach the site for a passthrough.
UPSTREAM_UNAVAILABLE = 503


class Fault(Exception):
    """An application error to return to the caller as the site would."""

    code: int = API_ERROR

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.code)


class AuthenticationFault(Fault):
    code = AUTH_FAILED


def error_body(message: str, code: int = API_ERROR) -> dict[str, Any]:
    return {"exception": True, "message": message, "error_code": code}


# -- message builders: one place for the wording every component uses ----------

def crud(method: str, detail: str) -> Fault:
    """The site's prefix for errors raised while validating a request."""
    return Fault(f"API {method}() CRUD ERROR #1: {detail}")


def unknown_entity_type(method: str, entity_type: Any) -> Fault:
    return crud(method, f"Entity type '{entity_type}' does not exist.")


def unknown_field(method: str, entity_type: str, field_name: Any) -> Fault:
    return crud(method, f"Field '{field_name}' does not exist on entity type '{entity_type}'.")


def bad_relation(method: str, relation: Any, data_type: str, path: str) -> Fault:
    return crud(method, f"Invalid filter: the '{relation}' relation is not supported "
                        f"for field '{path}' of type '{data_type}'.")


def bad_filter(method: str, detail: str) -> Fault:
    return crud(method, f"Invalid filter: {detail}")


def bad_value(method: str, path: str, data_type: str, value: Any) -> Fault:
    return crud(method, f"Invalid value {value!r} for field '{path}' of type '{data_type}'.")


def not_found(method: str, entity_type: str, entity_id: Any) -> Fault:
    return crud(method, f"Entity {entity_type} with id {entity_id} does not exist.")


def auth_failed(detail: str = "Can't authenticate script or user.") -> AuthenticationFault:
    return AuthenticationFault(detail)


def unknown_method(method: Any) -> Fault:
    return Fault(f"API method '{method}' does not exist.")


# -- read parameters (shared so a cache validating a read words it like the mock) ------

def bad_paging(method: str, name: str, value: Any) -> Fault:
    return crud(method, f"paging '{name}' must be a positive integer, got {value!r}")


def bad_sort(method: str, sort: Any) -> Fault:
    return crud(method, f"Invalid sort {sort!r}: expected {{'field_name': ..., 'direction': 'asc'|'desc'}}.")


def unsortable_field(method: str, entity_type: str, field_name: str, data_type: str) -> Fault:
    return crud(method, f"Field '{field_name}' of type '{data_type}' on entity type '{entity_type}' "
                        f"cannot be sorted on.")


def bad_return_only(method: str, value: Any) -> Fault:
    return crud(method, f"return_only must be 'active' or 'retired', got {value!r}")


def bad_return_field(method: str, value: Any) -> Fault:
    return crud(method, f"Invalid return field {value!r}: return_fields must be a list of field names.")


def not_editable(method: str, entity_type: str, field_name: str) -> Fault:
    return crud(method, f"Field '{field_name}' of entity type '{entity_type}' is not editable.")
