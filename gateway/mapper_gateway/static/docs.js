"use strict";
// Swagger UI over the gateway's own OpenAPI document; every file it needs is served locally.
// The page may carry ?token=: it goes to the API as a bearer header (the spec fetch and
// "Try it out" alike), never into another URL, and leaves the address bar.
(() => {
  const token = new URLSearchParams(window.location.search).get("token");
  if (token) {
    // Out of the address bar and the history, as the dashboard does.
    window.history.replaceState(null, "", window.location.pathname + window.location.hash);
  }
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the public validator is on the internet, which an edge box may lack
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: (request) => {
      if (token && !request.headers.Authorization) {
        request.headers.Authorization = `Bearer ${token}`;
      }
      return request;
    },
  });
})();
