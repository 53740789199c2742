"""Solutions of notebooks/10_failure_museum.ipynb, one block per exercise cell id."""

# %% exercise-predict-ghost
predicted_ghost = True  # the delete marker's key ('', 1) is not Ada's ('US', 1)

# %% exercise-toast-fix
run("ALTER TABLE museum_notes REPLICA IDENTITY FULL")  # before the migration: not retroactive
print("museum_notes: REPLICA IDENTITY", replication.replica_identity(pg, "museum_notes"))
