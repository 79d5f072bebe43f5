"""The product's records, as stored in the roster table and answered by the API."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict


class ProductModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class School(ProductModel):
    id: str
    name: str


class ProductClass(ProductModel):
    id: str
    sourcedId: str
    name: str
    title: str
    schoolId: str
    classCode: str
    periods: tuple[str, ...]
    terms: tuple[str, ...]
    termIds: tuple[str, ...]
    teacherIds: tuple[str, ...]
    studentIds: tuple[str, ...]
    startDate: date | None
    visibleFrom: date | None


class ProductUser(ProductModel):
    id: str
    sourcedId: str
    email: str
    username: str
    givenName: str
    familyName: str
    role: str
    status: str
    schoolIds: tuple[str, ...]


class ProductEnrollment(ProductModel):
    id: str
    classId: str
    userId: str
    role: str


PRODUCT_KINDS: dict[str, type[ProductModel]] = {
    "schools": School,
    "classes": ProductClass,
    "users": ProductUser,
    "enrollments": ProductEnrollment,
}


class Issue(BaseModel):
    """A rejected record (error) or a warning, as listed in the run record."""

    entity: str
    sourcedId: str
    reason: str
