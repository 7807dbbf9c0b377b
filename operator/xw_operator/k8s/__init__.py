"""The Kubernetes backend: kopf handlers that reconcile ModelInstances into Deployments and Services.

Layering (one module per concern): ``status`` and the pure half of ``reconcile`` decide; ``client`` does
the HTTP; ``handlers`` only wires kopf events to those functions; ``runner`` starts kopf.
"""
