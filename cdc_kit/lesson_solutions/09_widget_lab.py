"""Solutions of notebooks/09_widget_lab.ipynb, one block per exercise cell id."""

# %% exercise-predict-order-events
predicted_events = 4  # the order row and its 3 items: one event per changed row

# %% exercise-cascade
customer = lab.insert("customer", name="Cascade Test")
order = lab.insert("order", customerId=customer.id, items=2)
lab.wait_visible(customer)
lab.wait_visible(order)
deleted = lab.delete("customer", customer.id)
lab.wait_visible(deleted)
experiment_customer = customer.id
experiment_order = order.id
