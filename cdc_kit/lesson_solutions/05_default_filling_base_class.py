"""Solutions of notebooks/05_default_filling_base_class.ipynb, one block per exercise cell id."""

# %% exercise-predict-accepting
predicted_accepting = {"order", "orderitem"}  # customer and product keep min_length=1 on name

# %% exercise-delete-only-validator
class MyCdcBase(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def fill_defaults_for_deletes(cls, data: Any, info: ValidationInfo) -> Any:
        """For a delete only: a copy of the event with each None replaced by its type's default."""
        operation = (info.context or {}).get("operation")
        if operation != "delete" or not isinstance(data, dict):
            return data
        filled = dict(data)  # a copy: the caller's event stays as it arrived
        for name, field in cls.model_fields.items():
            if filled.get(name) is None:
                filled[name] = TYPE_DEFAULTS[unwrap(field.annotation)]
        return filled


class MyProductOlap(MyCdcBase, ProductColumns):
    pass
