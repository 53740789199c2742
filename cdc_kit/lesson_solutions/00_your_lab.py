"""Solutions of notebooks/00_your_lab.ipynb, one block per exercise cell id."""

# %% exercise-find-event
events = recent_events(stack, limit=20, table="customer")
mine = events[events["payload"].map(lambda row: row["name"] == new_name)]
event_lsn = mine["lsn"].iloc[-1]
