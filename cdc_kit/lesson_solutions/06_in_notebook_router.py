"""Solutions of notebooks/06_in_notebook_router.ipynb, one block per exercise cell id."""

# %% exercise-predict-events
# how many events for one transaction that updates 3 customers and 2 orders? a number
predicted_events = 5  # one per changed row

# %% exercise-route-refunds
class RefundOlap(CdcOlapModelBase, RefundBase, CdcFields):
    __table__ = "refund"
    id: Annotated[int, "uint64"]
    paymentId: Annotated[int, "uint64"]
    reason: Annotated[str, "LowCardinality"]


router.register(RefundOlap)
print(router.replay_dead_letters())
ch.query_df(
    "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'refund'",
    parameters={"db": database},
)
