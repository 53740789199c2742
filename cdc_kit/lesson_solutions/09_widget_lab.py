"""Solutions of notebooks/09_widget_lab.ipynb, one block per exercise cell id."""

# %% exercise-raise-button
def raise_price(button):
    price = lab.pg_row("product", product_id)["price"].iloc[0]
    lab.update("product", product_id, price=(price * Decimal("1.10")).quantize(Decimal("0.01")))


raise_button = widgets.Button(description="+10 % price")
raise_button.on_click(raise_price)
display(raise_button)
