"""Solutions of notebooks/06_in_notebook_router.ipynb, one block per exercise cell id."""

# %% exercise-route-refunds
class RefundOlap(CdcOlapModelBase, RefundBase, CdcFields):
    __table__ = "refund"
    id: Annotated[int, "uint64"]
    paymentId: Annotated[int, "uint64"]
    reason: Annotated[str, "LowCardinality"]


router.register(RefundOlap)
print(router.replay_dead_letters())
