"""Solutions of notebooks/02_sqlmodel_entities.ipynb, one block per exercise cell id."""

# %% exercise-predict-table-class
predicted_raises = False  # a table class does not validate when called

# %% exercise-review-olap
class ReviewOlap(CdcOlapModelBase, ReviewBase, CdcFields):
    __table__ = "review"
    id: Annotated[int, "uint64"]
    productId: Annotated[int, "uint64"]
    verdict: Annotated[str, "LowCardinality"]


ch.command(olap.create_table_sql(ReviewOlap, database=database))
olap.describe(ReviewOlap)
