"""Solutions of notebooks/10_failure_museum.ipynb, one block per exercise cell id."""

# %% exercise-accounts-query
accounts_sql = "SELECT count(), sum(balance) FROM museum_account FINAL"
