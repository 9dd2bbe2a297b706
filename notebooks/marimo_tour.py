import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")


@app.cell
def _():
    import marimo as mo

    import cnnwidgets

    demo = cnnwidgets.demo.mnist("val")  # 2,000 shipped digits and a small CNN trained on them
    kw = dict(mean=demo.mean, std=demo.std)
    return cnnwidgets, demo, kw, mo


@app.cell
def _(mo):
    mo.md(r"""
    # Inside a CNN, in marimo

    The **Explorer** below shows every view of the demo network, linked by one selection:
    click a point of the t-SNE map and the feature maps and the attribution switch to that
    digit; click a feature map and the filters, the optimizer and the channel card move to
    that channel. The charts (class probabilities, the optimizer's loss curve) are drawn by
    the views themselves, live.
    """)
    return


@app.cell
def _(cnnwidgets, demo, kw):
    ex = cnnwidgets.Explorer(demo.model, demo.images[:600], demo.labels[:600], demo.classes,
                             tsne_images=300, **kw)
    ex
    return


@app.cell
def _(mo):
    mo.md(r"""
    ## Your own views, linked

    Any views given one `cnnwidgets.Selection` follow each other; here the feature maps
    and the attribution of the same digits, side by side.
    """)
    return


@app.cell
def _(cnnwidgets, demo, kw, mo):
    sel = cnnwidgets.Selection()
    maps = cnnwidgets.ActivationExplorer(demo.model, demo.images[:100], demo.labels[:100], demo.classes,
                                         layer="features.3", selection=sel, **kw)
    sal = cnnwidgets.SaliencyViewer(demo.model, demo.images[:100], demo.labels[:100], demo.classes,
                                    method="integrated_gradients", selection=sel, **kw)
    # mo.ui.anywidget makes the view's state a value other cells react to
    sal_view = mo.ui.anywidget(sal)
    mo.vstack([maps, sal_view])
    return maps, sal, sal_view, sel


@app.cell
def _(mo, sal, sal_view):
    # marimo runs this cell again when you step to another image in the attribution view
    index = sal_view.value["index"]
    heat = sal.heatmap(index)
    mo.md(f"The attribution of image #{index} has its largest value at pixel "
          f"{tuple(int(v) for v in divmod(int(heat.argmax()), heat.shape[1]))}.")
    return


if __name__ == "__main__":
    app.run()
