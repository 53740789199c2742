"""Solutions of notebooks/02_sqlmodel_entities.ipynb, one block per exercise cell id."""

# %% exercise-review-olap
class ReviewOlap(CdcOlapModelBase, ReviewBase, CdcFields):
    __table__ = "review"
    id: Annotated[int, "uint64"]
    productId: Annotated[int, "uint64"]
    verdict: Annotated[str, "LowCardinality"]


ch.command(olap.create_table_sql(ReviewOlap, database=database))
olap.describe(ReviewOlap)
