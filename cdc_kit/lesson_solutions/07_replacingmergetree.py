"""Solutions of notebooks/07_replacingmergetree.ipynb, one block per exercise cell id."""

# %% exercise-newest-units
newest_sql = """
SELECT id, argMax(units, lsn) AS units
FROM lesson07_stock
GROUP BY id
HAVING argMax(is_deleted, lsn) = 0
ORDER BY id
"""
ch.query_df(newest_sql)
